"""Best-effort use of the Django cache (django-redis): a cache that does not answer is a miss, not an error.

The database stays the source of truth, so a Redis outage makes reads slower, never failing. Failures are counted
(`cache_errors_total`) and logged: a writer's each time, readers' (gets and fills) at most once per
READ_FAILURES_LOGGED_EVERY seconds with how many were skipped, since in an outage every request's read fails.
Reads and fills use Django's async cache API: with FAST_PATH on, the speed layer's backend answers them on the
event loop (fastpath/cache.py); otherwise the blocking client runs on an executor thread. Either way the event
loop never waits on a socket.
"""

import logging
import threading
import time
from contextlib import contextmanager

from django.core.cache import cache
from django_redis.exceptions import ConnectionInterrupted
from prometheus_client import Counter
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

CACHE_ERRORS = Counter("cache_errors_total", "Cache operations that failed and were skipped", ["operation"])

_UNAVAILABLE = (RedisError, ConnectionInterrupted, OSError)


READ_FAILURES_LOGGED_EVERY = 10.0


class _ReadFailures:
    """Readers' failures, logged once per interval with their count rather than once per request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next_line_at = 0.0
        self._skipped = 0

    def log(self, operation: str, exc: Exception) -> None:
        now = time.monotonic()
        with self._lock:
            self._skipped += 1
            if now < self._next_line_at:
                return
            self._next_line_at = now + READ_FAILURES_LOGGED_EVERY
            skipped, self._skipped = self._skipped, 0
        logger.warning(
            "cache %s skipped: %s (%d reads and fills skipped since the last such line)", operation, exc, skipped
        )


_read_failures = _ReadFailures()


@contextmanager
def _tolerated(operation: str, *, writer: bool = False):
    try:
        yield
    except _UNAVAILABLE as exc:
        CACHE_ERRORS.labels(operation).inc()
        if writer:
            logger.error("cache %s skipped: %s", operation, exc)
        else:
            _read_failures.log(operation, exc)


async def get(key: str):
    with _tolerated("get"):
        return await cache.aget(key)
    return None


async def add(key: str, value, ttl: int) -> None:
    """Store unless the key exists: how readers fill the cache, so they never overwrite a writer's newer value."""
    with _tolerated("add"):
        await cache.aadd(key, value, ttl)


async def set_value(key: str, value, ttl: int | None) -> None:
    with _tolerated("set"):
        await cache.aset(key, value, ttl)


# Writers are synchronous: services run in worker threads, their cache updates in `transaction.on_commit`.
# A writer's failure matters more than a reader's (an entry it could not replace may be served until it
# expires), hence the error level.


def set_many_now(mapping: dict, ttl: int | None) -> None:
    if not mapping:
        return
    with _tolerated("set", writer=True):
        cache.set_many(mapping, ttl)


def delete_many_now(keys: list[str]) -> None:
    if not keys:
        return
    with _tolerated("delete", writer=True):
        cache.delete_many(keys)
