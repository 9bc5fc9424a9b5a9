"""A circuit breaker per receiving host, shared by every worker (Redis, atomic Lua; in-process without Redis)."""

import logging
import threading
import time
from dataclasses import dataclass

import redis
from django.conf import settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BreakerDecision:
    allowed: bool
    # This request is the half-open breaker's one trial.
    trial: bool = False
    # When to come back when not allowed (epoch seconds).
    retry_at: float = 0.0


# Fields of the per-host hash: state (closed | open | half_open), failures (in a row), until (epoch seconds: the end
# of the cool-down when open, of the trial's lease when half-open). No hash: closed, no failures.
_ACQUIRE = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'closed' then return {1, 0, '0'} end
local now = tonumber(ARGV[1])
local until_ = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
if now < until_ then return {0, 0, tostring(until_)} end
redis.call('HSET', KEYS[1], 'state', 'half_open', 'until', tostring(now + tonumber(ARGV[2])))
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {1, 1, '0'}
"""
_FAILURE = """
local state = redis.call('HGET', KEYS[1], 'state')
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local opened = 0
if state == 'half_open' or (state ~= 'open' and failures >= tonumber(ARGV[2])) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'until', tostring(tonumber(ARGV[1]) + tonumber(ARGV[3])))
  opened = 1
elseif not state then
  redis.call('HSET', KEYS[1], 'state', 'closed')
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return opened
"""
# A trial that was taken but never made (its URL was refused): the next caller may make it at once.
_RELEASE = """
if redis.call('HGET', KEYS[1], 'state') == 'half_open' then
  redis.call('HSET', KEYS[1], 'state', 'open', 'until', '0')
end
return 0
"""


def _trial_lease_seconds() -> int:
    return settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS + settings.WEBHOOK_READ_TIMEOUT_SECONDS + 5


def _breaker_ttl() -> int:
    # Long enough to outlive a cool-down; a host not heard of for an hour starts afresh.
    return settings.WEBHOOK_BREAKER_COOLDOWN_SECONDS + 3600


class RedisBreaker:
    """Shared by every worker: each transition is one Lua script, so concurrent workers agree on one trial."""

    def __init__(self, url: str, prefix: str) -> None:
        self.prefix = prefix
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.scripts = {
            name: self.client.register_script(source)
            for name, source in (("acquire", _ACQUIRE), ("failure", _FAILURE), ("release", _RELEASE))
        }

    def _key(self, host: str) -> str:
        return f"{self.prefix}:{host}"

    def acquire(self, host: str, now: float | None = None) -> BreakerDecision:
        now = time.time() if now is None else now
        allowed, trial, retry_at = self.scripts["acquire"](
            keys=[self._key(host)], args=[repr(now), _trial_lease_seconds(), _breaker_ttl()]
        )
        return BreakerDecision(allowed=bool(allowed), trial=bool(trial), retry_at=float(retry_at))

    def failure(self, host: str, now: float | None = None) -> bool:
        """Counts a failure; True when it opened the breaker."""
        now = time.time() if now is None else now
        args = [
            repr(now),
            settings.WEBHOOK_BREAKER_THRESHOLD,
            settings.WEBHOOK_BREAKER_COOLDOWN_SECONDS,
            _breaker_ttl(),
        ]
        return bool(self.scripts["failure"](keys=[self._key(host)], args=args))

    def success(self, host: str) -> None:
        self.client.delete(self._key(host))

    def release(self, host: str) -> None:
        self.scripts["release"](keys=[self._key(host)])

    def state(self, host: str) -> str:
        value = self.client.hget(self._key(host), "state")
        return value.decode() if value else "closed"


class MemoryBreaker:
    """The embedded default's breaker (one process): the same transitions under a lock."""

    def __init__(self) -> None:
        self._hosts: dict[str, dict] = {}
        self._lock = threading.Lock()

    def acquire(self, host: str, now: float | None = None) -> BreakerDecision:
        now = time.time() if now is None else now
        with self._lock:
            entry = self._hosts.get(host)
            if entry is None or entry["state"] == "closed":
                return BreakerDecision(allowed=True)
            if now < entry["until"]:
                return BreakerDecision(allowed=False, retry_at=entry["until"])
            entry.update(state="half_open", until=now + _trial_lease_seconds())
            return BreakerDecision(allowed=True, trial=True)

    def failure(self, host: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self._lock:
            entry = self._hosts.setdefault(host, {"state": "closed", "failures": 0, "until": 0.0})
            entry["failures"] += 1
            if entry["state"] == "half_open" or (
                entry["state"] != "open" and entry["failures"] >= settings.WEBHOOK_BREAKER_THRESHOLD
            ):
                entry.update(state="open", until=now + settings.WEBHOOK_BREAKER_COOLDOWN_SECONDS)
                return True
            return False

    def success(self, host: str) -> None:
        with self._lock:
            self._hosts.pop(host, None)

    def release(self, host: str) -> None:
        with self._lock:
            entry = self._hosts.get(host)
            if entry is not None and entry["state"] == "half_open":
                entry.update(state="open", until=0.0)

    def state(self, host: str) -> str:
        with self._lock:
            return self._hosts.get(host, {}).get("state", "closed")


_breakers: dict[str, RedisBreaker | MemoryBreaker] = {}


def get_breaker() -> RedisBreaker | MemoryBreaker:
    url = settings.REDIS_URL
    breaker = _breakers.get(url)
    if breaker is None:
        breaker = RedisBreaker(url, f"{settings.CACHE_KEY_PREFIX}:webhook-breaker") if url else MemoryBreaker()
        _breakers[url] = breaker
    return breaker


class FailOpen:
    """The breaker protects receivers and our workers; it is not worth losing deliveries over. With Redis
    unreachable every request is allowed and nothing is counted (logged)."""

    def __init__(self, breaker) -> None:
        self.breaker = breaker

    def __getattr__(self, name):
        method = getattr(self.breaker, name)

        def call(*args, **kwargs):
            try:
                return method(*args, **kwargs)
            except (redis.RedisError, OSError) as exc:
                logger.warning("webhook circuit breaker unavailable (%s): failing open", exc)
                return BreakerDecision(allowed=True) if name == "acquire" else None

        return call
