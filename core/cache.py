"""Best-effort use of the Django cache (django-redis): a cache that does not answer is a miss, not an error.

The database stays the source of truth, so a Redis outage makes reads slower, never failing. Failures are logged
and counted (`cache_errors_total`). With django-redis, reads and fills run on the event loop through redis-py's
asyncio connections (`_NativeRedis`, on core.redis.LoopCommands); other backends go through Django's async cache API
(the blocking client on an executor thread). Either way the event loop never waits on a socket.
"""

import logging
from contextlib import contextmanager

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from django_prometheus.cache.metrics import django_cache_get_fail_total as get_failures
from django_prometheus.cache.metrics import django_cache_get_total as get_total
from django_prometheus.cache.metrics import django_cache_hits_total as hits
from django_prometheus.cache.metrics import django_cache_misses_total as misses
from django_redis.cache import RedisCache
from django_redis.exceptions import ConnectionInterrupted
from prometheus_client import Counter
from redis.exceptions import RedisError

from fastpath.redis import LoopCommands

logger = logging.getLogger(__name__)

CACHE_ERRORS = Counter("cache_errors_total", "Cache operations that failed and were skipped", ["operation"])

_UNAVAILABLE = (RedisError, ConnectionInterrupted, OSError)


@contextmanager
def _tolerated(operation: str, level: int = logging.WARNING):
    try:
        yield
    except _UNAVAILABLE as exc:
        CACHE_ERRORS.labels(operation).inc()
        logger.log(level, "cache %s skipped: %s", operation, exc)


async def get(key: str):
    with _tolerated("get"):
        native = _native()
        if native is None:
            return await cache.aget(key)
        return await native.get(key)
    return None


async def add(key: str, value, ttl: int) -> None:
    """Store unless the key exists: how readers fill the cache, so they never overwrite a writer's newer value."""
    with _tolerated("add"):
        native = _native()
        if native is None:
            await cache.aadd(key, value, ttl)
        else:
            await native.set(key, value, ttl, only_new=True)


async def set_value(key: str, value, ttl: int | None) -> None:
    with _tolerated("set"):
        native = _native()
        if native is None:
            await cache.aset(key, value, ttl)
        else:
            await native.set(key, value, ttl)


class _NativeRedis:
    """django-redis' entries, read and written on the event loop.

    Django's async cache API runs django-redis' blocking client in a worker thread (`sync_to_async`): a thread hop
    per cache call, which made a cached post slower to serve than one read from PostgreSQL (README, Performance).
    This speaks to the same Redis on the loop (core.redis.LoopCommands), using django-redis' own key function and
    value encoding, so the entries are the very ones the synchronous writers (`set_many_now`, ...) replace; hits and
    misses are counted in django-prometheus' cache series like the backend's own reads.
    """

    def __init__(self, backend: RedisCache, location: str, timeout: float) -> None:
        self.codec = backend.client
        # The lean per-loop connections (core.redis.LoopCommands): a cached read is one GET on every request.
        self.redis = LoopCommands(location, timeout=timeout)
        # Counted only where the configured backend counts its own reads (django-prometheus' subclass).
        self.counted = type(backend).__module__.startswith("django_prometheus")

    async def get(self, key: str):
        self._count(get_total)
        try:
            value = await self.redis.execute("GET", self.codec.make_key(key))
        except _UNAVAILABLE:
            self._count(get_failures)
            raise
        self._count(misses if value is None else hits)
        return None if value is None else self.codec.decode(value)

    def _count(self, counter) -> None:
        if self.counted:
            counter.labels(backend="redis").inc()

    async def set(self, key: str, value, ttl: int | None, *, only_new: bool = False) -> None:
        command = ["SET", self.codec.make_key(key), self.codec.encode(value)]
        if ttl is not None:
            command += ["PX", int(ttl * 1000)]
        if only_new:
            command.append("NX")
        await self.redis.execute(*command)


# (the CACHES entry it was made for, the client): made again when the settings change (tests override them).
_native_backend: tuple[dict | None, "_NativeRedis | None"] = (None, None)


def _native() -> _NativeRedis | None:
    """The event-loop client when the cache is django-redis (one location), else None (Django's async API)."""
    global _native_backend
    config = settings.CACHES[DEFAULT_CACHE_ALIAS]
    if _native_backend[0] is not config:
        backend = caches.create_connection(DEFAULT_CACHE_ALIAS)
        location = config.get("LOCATION")
        native = None
        if isinstance(backend, RedisCache) and isinstance(location, str) and "," not in location:
            native = _NativeRedis(backend, location, config.get("OPTIONS", {}).get("SOCKET_TIMEOUT", 2))
        _native_backend = (config, native)
    return _native_backend[1]


# Writers are synchronous: services run in worker threads, their cache updates in `transaction.on_commit`.
# A writer's failure matters more than a reader's (an entry it could not replace may be served until it
# expires), hence the error level.


def set_many_now(mapping: dict, ttl: int | None) -> None:
    if not mapping:
        return
    with _tolerated("set", logging.ERROR):
        cache.set_many(mapping, ttl)


def delete_many_now(keys: list[str]) -> None:
    if not keys:
        return
    with _tolerated("delete", logging.ERROR):
        cache.delete_many(keys)
