"""A circuit breaker per receiving host, shared by every worker (the key-value backend: Redis, or process memory
for the embedded default)."""

import logging
import time
from dataclasses import dataclass

from django.conf import settings

from core.keyvalue import KeyValue, KeyValueUnavailable, MemoryKeys, Script, get_keyvalue

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BreakerDecision:
    allowed: bool
    # This request is the half-open breaker's one trial.
    trial: bool = False
    # When to come back when not allowed (epoch seconds).
    retry_at: float = 0.0


# Fields of the per-host hash: state (closed | open | half_open), failures (in a row), until (epoch seconds: the end
# of the cool-down when open, of the trial's lease when half-open). No hash: closed, no failures. Each transition is
# one Script: Lua for Redis, shared by every worker (so concurrent workers agree on one trial), and its twin for the
# embedded default's process memory. Times are the caller's `now`, the keys' expiry relative, in both.


def _acquire_in_memory(keys: MemoryKeys, names: list[str], args: list) -> list:
    (key,), (now, trial_lease, ttl) = names, args
    entry = keys.get(key)
    if entry is None or entry["state"] == "closed":
        return [1, 0, "0"]
    if now < entry["until"]:
        return [0, 0, str(entry["until"])]
    entry.update(state="half_open", until=now + trial_lease)
    keys.expire(key, ttl)
    return [1, 1, "0"]


ACQUIRE = Script(
    name="webhooks.breaker.acquire",
    lua="""
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'closed' then return {1, 0, '0'} end
local now = tonumber(ARGV[1])
local until_ = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
if now < until_ then return {0, 0, tostring(until_)} end
redis.call('HSET', KEYS[1], 'state', 'half_open', 'until', tostring(now + tonumber(ARGV[2])))
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {1, 1, '0'}
""",
    memory=_acquire_in_memory,
)


def _failure_in_memory(keys: MemoryKeys, names: list[str], args: list) -> int:
    (key,), (now, threshold, cooldown, ttl) = names, args
    entry = keys.get(key) or {"state": None, "failures": 0, "until": 0.0}
    entry["failures"] += 1
    opened = entry["state"] == "half_open" or (entry["state"] != "open" and entry["failures"] >= threshold)
    if opened:
        entry.update(state="open", until=now + cooldown)
    elif entry["state"] is None:
        entry["state"] = "closed"
    keys.set(key, entry, ttl=ttl)
    return int(opened)


# Returns 1 when this failure opened the breaker.
FAILURE = Script(
    name="webhooks.breaker.failure",
    lua="""
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
""",
    memory=_failure_in_memory,
)


def _release_in_memory(keys: MemoryKeys, names: list[str], args: list) -> int:
    entry = keys.get(names[0])
    if entry is not None and entry["state"] == "half_open":
        entry.update(state="open", until=0.0)
    return 0


# A trial that was taken but never made (its URL was refused): the next caller may make it at once.
RELEASE = Script(
    name="webhooks.breaker.release",
    lua="""
if redis.call('HGET', KEYS[1], 'state') == 'half_open' then
  redis.call('HSET', KEYS[1], 'state', 'open', 'until', '0')
end
return 0
""",
    memory=_release_in_memory,
)


def _state_in_memory(keys: MemoryKeys, names: list[str], args: list) -> str:
    entry = keys.get(names[0])
    return entry["state"] if entry is not None else "closed"


STATE = Script(
    name="webhooks.breaker.state",
    lua="return redis.call('HGET', KEYS[1], 'state') or 'closed'",
    memory=_state_in_memory,
)


def _trial_lease_seconds() -> int:
    return settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS + settings.WEBHOOK_READ_TIMEOUT_SECONDS + 5


def _breaker_ttl() -> int:
    # Long enough to outlive a cool-down; a host not heard of for an hour starts afresh.
    return settings.WEBHOOK_BREAKER_COOLDOWN_SECONDS + 3600


class Breaker:
    """The breakers of every host, over the key-value backend (synchronous: deliveries run in Celery workers).

    It fails open: the breaker protects receivers and our workers, and is not worth losing deliveries over. With
    Redis unreachable every request is allowed and nothing is counted (logged)."""

    def __init__(self, keyvalue: KeyValue, prefix: str) -> None:
        self.keyvalue = keyvalue
        self.prefix = prefix

    def _run(self, script: Script, host: str, args: list, *, unavailable):
        return self._failing_open(
            self.keyvalue.run_sync, script, [f"{self.prefix}:{host}"], args, unavailable=unavailable
        )

    @staticmethod
    def _failing_open(call, *args, unavailable):
        try:
            return call(*args)
        except KeyValueUnavailable as exc:
            logger.warning("webhook circuit breaker unavailable (%s): failing open", exc)
            return unavailable

    def acquire(self, host: str, now: float | None = None) -> BreakerDecision:
        now = time.time() if now is None else now
        allowed, trial, retry_at = self._run(
            ACQUIRE, host, [now, _trial_lease_seconds(), _breaker_ttl()], unavailable=(1, 0, "0")
        )
        return BreakerDecision(allowed=bool(allowed), trial=bool(trial), retry_at=float(retry_at))

    def failure(self, host: str, now: float | None = None) -> bool:
        """Counts a failure; True when it opened the breaker."""
        now = time.time() if now is None else now
        args = [now, settings.WEBHOOK_BREAKER_THRESHOLD, settings.WEBHOOK_BREAKER_COOLDOWN_SECONDS, _breaker_ttl()]
        return bool(self._run(FAILURE, host, args, unavailable=0))

    def success(self, host: str) -> None:
        self._failing_open(self.keyvalue.delete_sync, f"{self.prefix}:{host}", unavailable=None)

    def release(self, host: str) -> None:
        self._run(RELEASE, host, [], unavailable=0)

    def state(self, host: str) -> str:
        return self._run(STATE, host, [], unavailable="closed")


def get_breaker() -> Breaker:
    return Breaker(get_keyvalue(), f"{settings.CACHE_KEY_PREFIX}:webhook-breaker")
