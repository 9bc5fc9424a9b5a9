"""The one key-value backend: Redis shared by every process, or process memory for the embedded default.

`KeyValue` is a handful of plain commands (set with a TTL, exists, take, delete) and `run`: one atomic step, a
`Script`, written twice side by side in the module that uses it: as Lua for Redis and as a Python twin over
`MemoryKeys`, with the same keys, arguments and reply (decoded: str, int, list, never bytes). Async calls never
block the event loop: redis.asyncio clients per loop (`core.redis.LoopRedis`), and with FAST_PATH scripts go
through the speed layer's `fastpath.redis.LoopScripts`, since the rate limiter runs one per API request. Sync
calls (`run_sync`, `delete_sync`) are for code outside an event loop, Celery tasks.

Callers get `KeyValueUnavailable` when Redis did not answer, and decide themselves whether to fail open or closed.
Process memory always answers: one process by definition, each script atomic under one lock.
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from django.conf import settings
from redis.exceptions import RedisError

from core.redis import DEFAULT_TIMEOUT_SECONDS, LoopRedis, reconnect_once
from fastpath.redis import LoopScripts


class KeyValueUnavailable(Exception):
    """The backend did not answer; nothing happened."""


class MemoryKeys:
    """Process memory laid out as Redis keys: each holds whatever a script's twin keeps there (a str, an int, a
    dict, a deque...) and may expire, as a Redis key does. Expiry is measured on `clock` (a test's clock moves it);
    twins set relative TTLs, as their Lua does, and compute with the `now` they are given. Not locked itself:
    `MemoryKeyValue` runs each twin under its lock, which is what makes a twin atomic."""

    # Past this many keys the expired ones are purged (Redis does that on its own), so keys nobody reads again
    # cannot pile up.
    max_entries = 10_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._values: dict[str, Any] = {}
        self._deadlines: dict[str, float] = {}
        # Live keys found by the last purge: with that many live, purging again before twice as many would scan
        # the table on every new key for nothing.
        self._live_after_purge = 0

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: str) -> Any | None:
        return self._values.get(key) if self._live(key) else None

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Stores `value`. With `ttl` (seconds) the key expires then; without, it keeps the expiry it had (as a
        Redis INCR or HSET does), a new key none."""
        if not self._live(key):
            self._make_room()
        self._values[key] = value
        if ttl is not None:
            self._deadlines[key] = self.clock() + ttl

    def setdefault(self, key: str, default: Any) -> Any:
        """The key's value; `default`, stored without expiry, when there is none (as a Redis ZADD or RPUSH creates
        its key)."""
        if not self._live(key):
            self.set(key, default)
        return self._values[key]

    def expire(self, key: str, ttl: float) -> None:
        if self._live(key):
            self._deadlines[key] = self.clock() + ttl

    def ttl(self, key: str) -> float | None:
        """Seconds left; None for a key that is missing or never expires."""
        if not self._live(key) or key not in self._deadlines:
            return None
        return self._deadlines[key] - self.clock()

    def delete(self, key: str) -> None:
        self._deadlines.pop(key, None)
        self._values.pop(key, None)

    def _live(self, key: str) -> bool:
        deadline = self._deadlines.get(key)
        if deadline is not None and deadline <= self.clock():
            self.delete(key)
        return key in self._values

    def _make_room(self) -> None:
        if len(self._values) <= max(self.max_entries, 2 * self._live_after_purge):
            return
        now = self.clock()
        for key in [key for key, deadline in self._deadlines.items() if deadline <= now]:
            self.delete(key)
        self._live_after_purge = len(self._values)


@dataclass(frozen=True)
class Script:
    """One atomic step written twice: `lua` for Redis, `memory` its twin over process memory, called as
    `memory(keyspace, keys, args)`. Same keys, arguments and reply shape; `name` is unique per process."""

    name: str
    lua: str
    memory: Callable[[MemoryKeys, list[str], list], Any]


class KeyValue(Protocol):
    async def set(self, key: str, value: str, ttl: int) -> None:
        """Stores `value` for `ttl` seconds (at least one)."""

    async def exists(self, key: str) -> bool: ...

    async def take(self, key: str) -> str | None:
        """Reads and deletes in one step, so a value can be consumed at most once (GETDEL)."""

    async def delete(self, key: str) -> None: ...

    async def run(self, script: Script, keys: list[str], args: list) -> Any:
        """The reply of one atomic script."""

    def run_sync(self, script: Script, keys: list[str], args: list) -> Any:
        """`run` for code outside an event loop."""

    def delete_sync(self, key: str) -> None: ...


class _RedisErrors:
    """`with _unavailable_on_redis_errors:` turns redis-py's failures (refused, timed out, an error reply) into
    KeyValueUnavailable. A class with one shared instance: the limiter's per-request call allocates nothing for it."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, traceback) -> bool:
        if isinstance(exc, RedisError | OSError):
            raise KeyValueUnavailable(str(exc) or type(exc).__name__) from exc
        return False


_unavailable_on_redis_errors = _RedisErrors()


class RedisKeyValue:
    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.redis = LoopRedis(url, decode_responses=True, timeout=timeout)
        # The runner of `run`: the speed layer's with FAST_PATH (the rate limiter's call on every API request).
        self.scripts = LoopScripts(url, timeout=timeout, decode_responses=True) if settings.FAST_PATH else self.redis
        self.sync_client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=reconnect_once(), decode_responses=True
        )
        self._registered: dict[str, Script] = {}
        self._sync_scripts: dict[str, redis.commands.core.Script] = {}

    async def set(self, key: str, value: str, ttl: int) -> None:
        with _unavailable_on_redis_errors:
            await self.redis.client().set(key, value, ex=max(int(ttl), 1))

    async def exists(self, key: str) -> bool:
        with _unavailable_on_redis_errors:
            return bool(await self.redis.client().exists(key))

    async def take(self, key: str) -> str | None:
        with _unavailable_on_redis_errors:
            return await self.redis.client().getdel(key)

    async def delete(self, key: str) -> None:
        with _unavailable_on_redis_errors:
            await self.redis.client().delete(key)

    async def run(self, script: Script, keys: list[str], args: list) -> Any:
        self._register(script)
        with _unavailable_on_redis_errors:
            return await self.scripts.run(script.name, keys, args)

    def run_sync(self, script: Script, keys: list[str], args: list) -> Any:
        self._register(script)
        with _unavailable_on_redis_errors:
            return self._sync_scripts[script.name](keys=keys, args=args)

    def delete_sync(self, key: str) -> None:
        with _unavailable_on_redis_errors:
            self.sync_client.delete(key)

    def _register(self, script: Script) -> None:
        """Scripts are learnt at their first call (no round trip: EVALSHA loads one Redis does not know yet)."""
        known = self._registered.get(script.name)
        if known is script:
            return
        if known is not None:
            raise ValueError(f"two scripts are named {script.name!r}")
        self.scripts.register(script.name, script.lua)
        self._sync_scripts[script.name] = self.sync_client.register_script(script.lua)
        self._registered[script.name] = script


class MemoryKeyValue:
    """The embedded default's backend, and the rate limiter's fallback during a Redis outage: `MemoryKeys` under
    a lock, which every call holds (threads of one process share it)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.keys = MemoryKeys(clock)
        self._lock = threading.Lock()

    async def set(self, key: str, value: str, ttl: int) -> None:
        with self._lock:
            self.keys.set(key, value, ttl=max(int(ttl), 1))

    async def exists(self, key: str) -> bool:
        with self._lock:
            return self.keys.get(key) is not None

    async def take(self, key: str) -> str | None:
        with self._lock:
            value = self.keys.get(key)
            self.keys.delete(key)
            return value

    async def delete(self, key: str) -> None:
        self.delete_sync(key)

    async def run(self, script: Script, keys: list[str], args: list) -> Any:
        return self.run_sync(script, keys, args)

    def run_sync(self, script: Script, keys: list[str], args: list) -> Any:
        with self._lock:
            return script.memory(self.keys, keys, args)

    def delete_sync(self, key: str) -> None:
        with self._lock:
            self.keys.delete(key)


_instances: dict[tuple[str, float], KeyValue] = {}


def get_keyvalue(url: str | None = None, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> KeyValue:
    """The process' backend for `url` (default REDIS_URL; empty: process memory), one per URL and timeout."""
    url = settings.REDIS_URL if url is None else url
    keyvalue = _instances.get((url, timeout))
    if keyvalue is None:
        keyvalue = RedisKeyValue(url, timeout=timeout) if url else MemoryKeyValue()
        keyvalue = _instances.setdefault((url, timeout), keyvalue)
    return keyvalue
