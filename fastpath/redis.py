"""Lean Redis commands on the event loop: the key-value backend's scripts (the rate limiter's), the cache's reads."""

import asyncio
import collections
import hashlib
import weakref

from redis.asyncio.connection import Connection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.redis import DEFAULT_TIMEOUT_SECONDS, MAX_CONNECTIONS


class LoopCommands:
    """Redis commands on connections of its own, per event loop: for the calls made on every request (the rate
    limiter's script, the response cache's reads).

    `LoopRedis` goes through redis-py's client for every call: the pool's condition and its liveness probe of the
    socket, the retry wrapper, the command's option parsing and reply callbacks: several times the cost of the
    round trip itself. Here a call takes an idle connection (redis-py's own `Connection`, same URL, same timeouts,
    hiredis parsing when installed), writes the command, reads the raw reply and gives the connection back. A
    connection whose state is uncertain (an error on the socket, a cancelled call) is closed, never reused; a call
    on a connection found closed by the server is made once more on a new one (what redis-py's health check was
    for). Errors are redis-py's (`RedisError`, `OSError`), so callers handle them as before.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_connections: int = MAX_CONNECTIONS,
        decode_responses: bool = False,
    ):
        self.url = url
        self.timeout = timeout
        self.max_connections = max_connections
        self.decode_responses = decode_responses
        self._per_loop: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _pool(self) -> "_ConnectionPool":
        loop = asyncio.get_running_loop()
        pool = self._per_loop.get(loop)
        if pool is None:
            options = parse_url(self.url)
            connection_class = options.pop("connection_class", Connection)
            options.update(
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                decode_responses=self.decode_responses,
            )
            pool = self._per_loop[loop] = _ConnectionPool(
                lambda: connection_class(**options), self.max_connections, self.timeout
            )
        return pool

    async def execute(self, *command):
        """The reply (bytes, or str when decoding; int, list, None) of one command; a reply that is an error is
        raised."""
        pool = self._pool()
        connection = await pool.acquire()
        reusable = False
        try:
            # A connection that was open before this call may have been closed by the server in the meantime: a
            # failure to reach it is retried once on a fresh socket (which then fails for real if Redis is down).
            if connection.is_connected:
                try:
                    result = await self._call(connection, command)
                except RedisConnectionError:
                    await connection.disconnect(nowait=True)
                    result = await self._call(connection, command)
            else:
                result = await self._call(connection, command)
            reusable = True
            return result
        except ResponseError:
            # An error reply (NOSCRIPT, a wrong type): the exchange is complete, the connection fine.
            reusable = True
            raise
        finally:
            if not reusable:
                # Mid-command (an error, a timeout, a cancelled request): a reply may still be on its way.
                await connection.disconnect(nowait=True)
            pool.release(connection)

    async def _call(self, connection, command: tuple):
        await self._send(connection, command)
        return await connection.read_response()

    async def _send(self, connection, command: tuple) -> None:
        """`send_packed_command` without its `wait_for` (a task per command): the bytes go to the socket's buffer,
        and only when the socket cannot take them yet is there anything to wait for, within the timeout."""
        if not connection.is_connected:
            await connection.connect_check_health(check_health=False)
        writer = connection._writer
        try:
            writer.writelines(connection.pack_command(*command))
            if writer.transport.get_write_buffer_size():
                async with asyncio.timeout(self.timeout):
                    await writer.drain()
        except TimeoutError:
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc


class LoopScripts:
    """Lua scripts run by EVALSHA through `LoopCommands`: the key-value backend's path, where the rate limiter makes
    one script call per API request. A script Redis does not know yet (a restart, `SCRIPT FLUSH`) is loaded and the
    call made again, as redis-py's `register_script` does."""

    def __init__(
        self,
        url: str,
        *,
        scripts: dict[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_connections: int = MAX_CONNECTIONS,
        decode_responses: bool = False,
    ) -> None:
        self.commands = LoopCommands(
            url, timeout=timeout, max_connections=max_connections, decode_responses=decode_responses
        )
        self.sources: dict[str, bytes] = {}
        self.shas: dict[str, str] = {}
        for name, source in (scripts or {}).items():
            self.register(name, source)

    def register(self, name: str, source: str) -> None:
        """Makes a script runnable by name, also after construction (its callers may learn their scripts late)."""
        self.sources[name] = source.encode()
        self.shas[name] = hashlib.sha1(self.sources[name]).hexdigest()

    async def run(self, name: str, keys: list, args: list):
        command = ("EVALSHA", self.shas[name], len(keys), *keys, *args)
        try:
            return await self.commands.execute(*command)
        except NoScriptError:
            await self.commands.execute("SCRIPT", "LOAD", self.sources[name])
            return await self.commands.execute(*command)


class _ConnectionPool:
    """Idle connections of one loop, at most `limit` open; past that a call waits up to `timeout` for one."""

    def __init__(self, make, limit: int, timeout: float) -> None:
        self.make = make
        self.limit = limit
        self.timeout = timeout
        self.idle: list = []
        self.created = 0
        self.waiters: collections.deque[asyncio.Future] = collections.deque()

    async def acquire(self):
        if self.idle:
            return self.idle.pop()
        if self.created < self.limit:
            self.created += 1
            return self.make()
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            return await asyncio.wait_for(waiter, self.timeout)
        except TimeoutError:
            raise RedisConnectionError("no free Redis connection") from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Handed a connection just as this call was cancelled: pass it on.
                self.release(waiter.result())
            raise

    def release(self, connection) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        self.idle.append(connection)
