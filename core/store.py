"""A small async key-value store for short-lived security state (revoked tokens, attempt counters, tickets).

Redis (`redis.asyncio`, never blocking the event loop) when REDIS_URL is set; an in-process dictionary for the
embedded default, which is a single process by definition. Callers get `StoreUnavailable` when Redis cannot be
reached and decide themselves whether to fail open or closed.
"""

import threading
import time
from contextlib import contextmanager

import redis.asyncio as aioredis
from django.conf import settings
from redis.exceptions import RedisError

from core.redis import LoopRedis


class StoreUnavailable(Exception):
    """The backing store did not answer; the operation did not happen."""


# One atomic step: count a hit and start the window's clock on the first one.
_HIT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return {count, redis.call('TTL', KEYS[1])}
"""


@contextmanager
def _reachable():
    try:
        yield
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(str(exc)) from exc


class RedisStore:
    def __init__(self, url: str, prefix: str) -> None:
        self.prefix = prefix
        self.redis = LoopRedis(url, scripts={"hit": _HIT_SCRIPT})

    def client(self) -> aioredis.Redis:
        return self.redis.client()

    def _key(self, key: str) -> str:
        return f"{self.prefix}:{key}"

    async def set(self, key: str, value: str, ttl: int) -> None:
        with _reachable():
            await self.client().set(self._key(key), value, ex=max(int(ttl), 1))

    async def exists(self, key: str) -> bool:
        with _reachable():
            return bool(await self.client().exists(self._key(key)))

    async def take(self, key: str) -> str | None:
        """Read and delete in one step, so a value can be consumed at most once."""
        with _reachable():
            value = await self.client().getdel(self._key(key))
        return value.decode() if value is not None else None

    async def delete(self, key: str) -> None:
        with _reachable():
            await self.client().delete(self._key(key))

    async def hit(self, key: str, window: int) -> tuple[int, int]:
        """Count one hit in a fixed window that starts with the first hit; returns (hits, seconds left)."""
        with _reachable():
            count, ttl = await self.redis.script("hit")(keys=[self._key(key)], args=[int(window)])
        return int(count), max(int(ttl), 1)


class MemoryStore:
    """The embedded default's store: process memory with expiry, guarded by a lock for thread safety."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def _live(self, key: str) -> tuple[str, float] | None:
        entry = self._values.get(key)
        if entry is not None and entry[1] <= time.monotonic():
            del self._values[key]
            return None
        return entry

    async def set(self, key: str, value: str, ttl: int) -> None:
        with self._lock:
            self._values[key] = (value, time.monotonic() + max(int(ttl), 1))

    async def exists(self, key: str) -> bool:
        with self._lock:
            return self._live(key) is not None

    async def take(self, key: str) -> str | None:
        with self._lock:
            entry = self._live(key)
            self._values.pop(key, None)
            return entry[0] if entry else None

    async def delete(self, key: str) -> None:
        with self._lock:
            self._values.pop(key, None)

    async def hit(self, key: str, window: int) -> tuple[int, int]:
        with self._lock:
            entry = self._live(key)
            now = time.monotonic()
            count, expires = (int(entry[0]) + 1, entry[1]) if entry else (1, now + window)
            self._values[key] = (str(count), expires)
            return count, max(int(expires - now), 1)


_stores: dict[str, RedisStore | MemoryStore] = {}


def get_store() -> RedisStore | MemoryStore:
    url = settings.REDIS_URL
    store = _stores.get(url)
    if store is None:
        store = RedisStore(url, f"{settings.CACHE_KEY_PREFIX}:kv") if url else MemoryStore()
        _stores[url] = store
    return store
