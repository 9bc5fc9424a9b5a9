"""The key-value backend: the same protocol on real Redis (through either script runner) and in process memory,
scripts whose Lua and Python twin give the same replies, sync calls for Celery, and an unreachable Redis."""

import asyncio

import pytest

from core.keyvalue import KeyValueUnavailable, MemoryKeys, MemoryKeyValue, RedisKeyValue, Script

CLOSED_REDIS_PORT_URL = "redis://127.0.0.1:1/0"


def _append_in_memory(keys: MemoryKeys, names: list[str], args: list) -> list:
    (key,), (item, ttl) = names, args
    items = keys.setdefault(key, [])
    items.append(str(item))
    keys.expire(key, int(ttl))
    return [len(items), items[0], list(items)]


# A reply of each kind a script can give: an integer, a string and a list of strings.
APPEND = Script(
    name="test.append",
    lua="""
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {redis.call('LLEN', KEYS[1]), redis.call('LINDEX', KEYS[1], 0), redis.call('LRANGE', KEYS[1], 0, -1)}
""",
    memory=_append_in_memory,
)


def redis_keyvalue(url: str, settings, *, fast_path: bool) -> RedisKeyValue:
    # The script runner is chosen when the backend is made: the speed layer's or redis-py's client.
    settings.FAST_PATH = fast_path
    return RedisKeyValue(url, timeout=0.5)


@pytest.fixture(params=["redis-fast-path", "redis", "memory"])
def keyvalue(request, settings):
    if request.param == "memory":
        return MemoryKeyValue()
    return redis_keyvalue(settings.REDIS_URL, settings, fast_path=request.param == "redis-fast-path")


async def test_a_value_is_set_seen_taken_once_and_deleted(keyvalue):
    await keyvalue.set("t-kv:ticket", "42:7", ttl=60)
    assert await keyvalue.exists("t-kv:ticket")
    assert await keyvalue.take("t-kv:ticket") == "42:7"
    assert await keyvalue.take("t-kv:ticket") is None
    assert not await keyvalue.exists("t-kv:ticket")

    await keyvalue.set("t-kv:revoked", "1", ttl=60)
    await keyvalue.delete("t-kv:revoked")
    assert not await keyvalue.exists("t-kv:revoked")
    await keyvalue.delete("t-kv:revoked")  # deleting what is not there is no error


async def test_a_value_expires_after_its_ttl(keyvalue):
    await keyvalue.set("t-kv:short", "x", ttl=1)
    await keyvalue.set("t-kv:no-ttl", "x", ttl=0)  # less than a second is one
    assert await keyvalue.exists("t-kv:short") and await keyvalue.exists("t-kv:no-ttl")
    await asyncio.sleep(1.2)
    assert not await keyvalue.exists("t-kv:short")
    assert await keyvalue.take("t-kv:no-ttl") is None


async def test_a_script_gives_the_same_decoded_reply_on_every_backend(keyvalue):
    assert await keyvalue.run(APPEND, ["t-kv:list"], ["a", 60]) == [1, "a", ["a"]]
    assert await keyvalue.run(APPEND, ["t-kv:list"], ["b", 60]) == [2, "a", ["a", "b"]]
    assert await keyvalue.run(APPEND, ["t-kv:other"], [3, 60]) == [1, "3", ["3"]]


def test_sync_calls_work_outside_an_event_loop_on_the_same_keys(keyvalue):
    assert keyvalue.run_sync(APPEND, ["t-kv:sync"], ["a", 60]) == [1, "a", ["a"]]
    assert asyncio.run(keyvalue.run(APPEND, ["t-kv:sync"], ["b", 60])) == [2, "a", ["a", "b"]]
    keyvalue.delete_sync("t-kv:sync")
    assert keyvalue.run_sync(APPEND, ["t-kv:sync"], ["c", 60]) == [1, "c", ["c"]]


def test_two_scripts_of_one_name_are_refused(settings):
    keyvalue = redis_keyvalue(settings.REDIS_URL, settings, fast_path=True)
    keyvalue.run_sync(APPEND, ["t-kv:clash"], ["a", 60])
    impostor = Script(name=APPEND.name, lua="return 0", memory=lambda keys, names, args: 0)
    with pytest.raises(ValueError, match="test.append"):
        keyvalue.run_sync(impostor, ["t-kv:clash"], [])


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "redis-py"])
async def test_an_unreachable_redis_is_unavailable_to_every_async_call(settings, fast_path):
    keyvalue = redis_keyvalue(CLOSED_REDIS_PORT_URL, settings, fast_path=fast_path)
    calls = [
        lambda: keyvalue.set("t-kv:k", "v", ttl=60),
        lambda: keyvalue.exists("t-kv:k"),
        lambda: keyvalue.take("t-kv:k"),
        lambda: keyvalue.delete("t-kv:k"),
        lambda: keyvalue.run(APPEND, ["t-kv:k"], ["a", 60]),
    ]
    for call in calls:
        with pytest.raises(KeyValueUnavailable):
            await call()


def test_an_unreachable_redis_is_unavailable_to_sync_calls(settings):
    keyvalue = redis_keyvalue(CLOSED_REDIS_PORT_URL, settings, fast_path=True)
    with pytest.raises(KeyValueUnavailable):
        keyvalue.run_sync(APPEND, ["t-kv:k"], ["a", 60])
    with pytest.raises(KeyValueUnavailable):
        keyvalue.delete_sync("t-kv:k")
