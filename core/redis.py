"""Redis clients: async ones for code that runs on event loops (requests, consumers, tests with a loop each), and
the reconnect policy every Redis client of the service shares (these, django-redis, the channel layer)."""

import asyncio
import weakref

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

# A stuck Redis must fail a request quickly rather than hang it.
DEFAULT_TIMEOUT_SECONDS = 2.0
# Per event loop (so per server process), per client.
MAX_CONNECTIONS = 64


def reconnect_once() -> Retry:
    """A pooled connection found dead (Redis restarted, or a proxy dropped it, since it was opened) is replaced and
    the command sent once more, at once: redis-py's pools otherwise surface it as an error, a 503 for a request,
    although Redis answers. Not on timeouts: a Redis that hangs must not be waited for twice."""
    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


def reconnect_once_async() -> AsyncRetry:
    """`reconnect_once` for redis.asyncio clients."""
    return AsyncRetry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


class LoopRedis:
    """One `redis.asyncio` client per running event loop, with the Lua scripts registered on it.

    redis.asyncio connections belong to the loop that opened them, and a process can run several loops over its
    life (the server's, async_to_sync's, a test's). Scripts are registered by name, at any time; each loop's client
    makes its `register_script` object at the script's first call there, which runs EVALSHA and loads the script
    itself when Redis does not know it yet.
    """

    def __init__(self, url: str, *, decode_responses: bool = False, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.url = url
        self.script_sources: dict[str, str] = {}
        self.decode_responses = decode_responses
        self.timeout = timeout
        self._per_loop: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _connection(self) -> tuple[aioredis.Redis, dict]:
        loop = asyncio.get_running_loop()
        connection = self._per_loop.get(loop)
        if connection is None:
            # A bounded pool that waits briefly for a free connection: a burst of hundreds of sockets leaving at
            # once queues up instead of failing with "Too many connections" (redis-py's pool raises at 100).
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url,
                max_connections=MAX_CONNECTIONS,
                timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                socket_timeout=self.timeout,
                health_check_interval=30,
                retry=reconnect_once_async(),
                decode_responses=self.decode_responses,
            )
            connection = (aioredis.Redis(connection_pool=pool), {})
            self._per_loop[loop] = connection
        return connection

    def register(self, name: str, source: str) -> None:
        self.script_sources[name] = source

    def client(self) -> aioredis.Redis:
        return self._connection()[0]

    def script(self, name: str):
        client, scripts = self._connection()
        script = scripts.get(name)
        if script is None:
            script = scripts[name] = client.register_script(self.script_sources[name])
        return script

    async def run(self, name: str, keys: list, args: list):
        """The reply of one of the registered scripts (EVALSHA, loading it first when Redis does not know it)."""
        return await self.script(name)(keys=keys, args=args)
