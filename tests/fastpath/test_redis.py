"""fastpath.redis.LoopCommands, LoopScripts on real Redis: the rate limiter's script calls and the cache's reads, and
what they survive."""

import asyncio

import pytest
import redis
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from fastpath.redis import LoopCommands, LoopScripts

INCREMENT = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
CLOSED_PORT_URL = "redis://127.0.0.1:1/0"


@pytest.fixture
def sync_redis():
    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def scripts():
    return LoopScripts(settings.REDIS_URL, scripts={"increment": INCREMENT}, timeout=1.0, max_connections=4)


async def test_runs_the_script_and_reuses_its_connections(scripts, sync_redis):
    results = await asyncio.gather(*(scripts.run("increment", ["t-scripts:n"], [1]) for _ in range(50)))
    assert sorted(results) == list(range(1, 51))
    assert int(sync_redis.get("t-scripts:n")) == 50
    pool = scripts.commands._pool()
    # 50 concurrent calls, never more than the bound's connections, all kept for the next calls.
    assert pool.created == 4
    assert len(pool.idle) == 4


async def test_a_script_redis_forgot_is_loaded_again(scripts, sync_redis):
    assert await scripts.run("increment", ["t-scripts:flush"], [2]) == 2
    sync_redis.script_flush()
    assert await scripts.run("increment", ["t-scripts:flush"], [3]) == 5


async def test_a_connection_closed_by_the_server_is_replaced_within_the_call(scripts, sync_redis):
    await scripts.run("increment", ["t-scripts:kill"], [1])
    (connection,) = scripts.commands._pool().idle
    assert connection.is_connected
    host, port = connection._writer.get_extra_info("sockname")[:2]
    assert sync_redis.client_kill_filter(addr=f"{host}:{port}") == 1
    # The idle socket is dead; the call still succeeds, once, on a new one.
    assert await scripts.run("increment", ["t-scripts:kill"], [1]) == 2
    assert int(sync_redis.get("t-scripts:kill")) == 2


async def test_redis_down_is_a_redis_error_and_the_connection_is_not_kept():
    unreachable = LoopScripts(CLOSED_PORT_URL, scripts={"increment": INCREMENT}, timeout=0.5)
    with pytest.raises(RedisConnectionError):
        await unreachable.run("increment", ["t-scripts:down"], [1])
    pool = unreachable.commands._pool()
    assert pool.idle == [] or not pool.idle[0].is_connected


async def test_a_cancelled_call_leaves_no_connection_with_a_reply_in_flight(scripts, sync_redis):
    sleeping = LoopScripts(settings.REDIS_URL, scripts={"slow": "return redis.call('INCR', KEYS[1])"}, timeout=1.0)
    call = asyncio.ensure_future(sleeping.run("slow", ["t-scripts:cancel"], []))
    await asyncio.sleep(0)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    # Whatever the state of the cancelled call's socket, the next call reads its own reply.
    assert await sleeping.run("slow", ["t-scripts:cancel"], []) in (1, 2)


async def test_plain_commands_and_error_replies_leave_the_connection_usable(sync_redis):
    commands = LoopCommands(settings.REDIS_URL, timeout=1.0, max_connections=1)
    assert await commands.execute("SET", "t-commands:k", b"v", "PX", 60_000, "NX") == b"OK"
    assert await commands.execute("SET", "t-commands:k", b"other", "NX") is None
    assert await commands.execute("GET", "t-commands:k") == b"v"
    assert await commands.execute("GET", "t-commands:missing") is None
    with pytest.raises(ResponseError):
        await commands.execute("LPUSH", "t-commands:k", "x")
    (connection,) = commands._pool().idle
    assert connection.is_connected
    assert await commands.execute("GET", "t-commands:k") == b"v"
    assert 0 < sync_redis.pttl("t-commands:k") <= 60_000
