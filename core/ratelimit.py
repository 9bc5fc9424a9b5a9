"""Rate limiting shared by every API operation: a sliding window or a token bucket per client and policy.

Each algorithm is one `core.keyvalue.Script`: Lua run atomically in Redis (EVALSHA, loaded on first use) on
asyncio connections kept per event loop (with FAST_PATH the speed layer's `fastpath.redis.LoopScripts`, the round
trip without the client's per-call layers), so limiting never blocks the loop and concurrent requests, from any
number of server processes, can never both take the last slot; beside it, its Python twin for process memory. The
scripts take `now` from the caller's clock (injectable, for tests), which is why the servers' clocks are expected
to be NTP-synchronised.

When Redis cannot be reached, a policy either fails open to the same limiter over process memory (per process,
so the effective limit multiplies by the number of processes for the duration; logged and counted in
`ratelimit_redis_unavailable_total`) or fails closed with `503`. After a failure Redis is left alone for a few
seconds, so an outage costs one timeout, not one per request. Without a Redis URL (the embedded default, one
process by definition) the limiter is over process memory from the start.
"""

import ipaddress
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from prometheus_client import Counter

from core.errors import RateLimited, ServiceUnavailable
from core.keyvalue import KeyValue, KeyValueUnavailable, MemoryKeys, MemoryKeyValue, Script, get_keyvalue
from core.metrics import RATE_LIMITED

logger = logging.getLogger(__name__)

REDIS_UNAVAILABLE = Counter(
    "ratelimit_redis_unavailable_total",
    "Rate-limit decisions taken without Redis",
    ["policy", "outcome"],
)

# A limiter that cannot answer fast is worse than none: every API request waits for it.
_REDIS_TIMEOUT_SECONDS = 0.5
# How long to skip Redis after it failed before trying it again.
_RETRY_REDIS_AFTER_SECONDS = 5.0

Clock = Callable[[], float]


@dataclass(frozen=True)
class SlidingWindow:
    """At most `limit` requests in any `window` seconds."""

    limit: int
    window: int


@dataclass(frozen=True)
class TokenBucket:
    """Bursts of up to `burst` requests, refilled at `rate` per second."""

    rate: float
    burst: int


@dataclass(frozen=True)
class Policy:
    name: str
    rule: SlidingWindow | TokenBucket
    # Refuse (503) rather than fall back to in-process limits when Redis is unreachable.
    fail_closed: bool = False

    @classmethod
    def from_settings(cls, name: str) -> "Policy":
        config = settings.RATE_LIMIT_POLICIES[name]
        if config["algorithm"] == "sliding_window":
            rule = SlidingWindow(limit=config["limit"], window=config["window"])
        elif config["algorithm"] == "token_bucket":
            rule = TokenBucket(rate=config["rate"], burst=config["burst"])
        else:
            raise ValueError(f"unknown rate-limit algorithm {config['algorithm']!r} in policy {name!r}")
        return cls(name=name, rule=rule, fail_closed=config.get("fail_closed", False))


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    # Milliseconds until the quota is whole again (bucket full, or the window's oldest request expired).
    reset_ms: int
    # Milliseconds until a request would be allowed; 0 when this one was.
    retry_after_ms: int

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(max(self.remaining, 0)),
            "RateLimit-Reset": str(math.ceil(self.reset_ms / 1000)),
        }


def _sliding_window_in_memory(keys: MemoryKeys, names: list[str], args: list) -> list[int]:
    (key,), (now, window, limit, _member) = names, args
    times = keys.setdefault(key, deque())
    while times and times[0] <= now - window:
        times.popleft()
    allowed = 0
    if len(times) < limit:
        times.append(now)
        allowed = 1
    keys.expire(key, window / 1000)
    reset = max(times[0] + window - now, 0) if times else 0
    return [allowed, limit - len(times), reset, 0 if allowed else max(reset, 1)]


# KEYS[1]: sorted set of request times (ms). ARGV: now_ms, window_ms, limit, a unique member for this request.
SLIDING_WINDOW = Script(
    name="ratelimit.sliding_window",
    lua="""
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local allowed = 0
if count < limit then
    redis.call('ZADD', KEYS[1], now, ARGV[4])
    count = count + 1
    allowed = 1
end
redis.call('PEXPIRE', KEYS[1], window)
local reset = 0
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if oldest[2] then reset = math.max(tonumber(oldest[2]) + window - now, 0) end
local retry = 0
if allowed == 0 then retry = math.max(reset, 1) end
return {allowed, limit - count, reset, retry}
""",
    memory=_sliding_window_in_memory,
)


def _token_bucket_in_memory(keys: MemoryKeys, names: list[str], args: list) -> list[int]:
    (key,), (now, rate, burst) = names, args
    tokens, ts = keys.get(key) or (burst, now)
    if now > ts:
        tokens = min(burst, tokens + (now - ts) * rate / 1000)
        ts = now
    allowed = 0
    if tokens >= 1:
        tokens -= 1
        allowed = 1
    keys.set(key, (tokens, ts))
    keys.expire(key, (math.ceil(burst * 1000 / rate) + 1000) / 1000)
    retry = 0 if allowed else math.ceil((1 - tokens) * 1000 / rate)
    return [allowed, math.floor(tokens), math.ceil((burst - tokens) * 1000 / rate), retry]


# KEYS[1]: hash {tokens, ts}. ARGV: now_ms, rate (tokens per second), burst.
TOKEN_BUCKET = Script(
    name="ratelimit.token_bucket",
    lua="""
local now = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
    tokens = burst
    ts = now
end
-- A clock behind the last writer's (another server) refills nothing rather than going back in time.
if now > ts then
    tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
    ts = now
end
local allowed = 0
if tokens >= 1 then
    tokens = tokens - 1
    allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(ts))
-- Once it would have refilled completely, a missing bucket means the same as a full one.
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
local retry = 0
if allowed == 0 then retry = math.ceil((1 - tokens) * 1000 / rate) end
return {allowed, math.floor(tokens), math.ceil((burst - tokens) * 1000 / rate), retry}
""",
    memory=_token_bucket_in_memory,
)


def _decision(policy: Policy, allowed, remaining, reset_ms, retry_after_ms) -> Decision:
    limit = policy.rule.limit if isinstance(policy.rule, SlidingWindow) else policy.rule.burst
    return Decision(bool(allowed), limit, int(remaining), int(reset_ms), int(retry_after_ms))


class Limiter:
    """The two algorithms over a key-value backend: Redis, shared by every process, or process memory (the
    embedded default's limiter and the fail-open fallback). Raises KeyValueUnavailable when Redis does not answer;
    then nothing was counted."""

    def __init__(self, keyvalue: KeyValue, prefix: str, clock: Clock = time.time) -> None:
        self.keyvalue = keyvalue
        self.prefix = prefix
        self.clock = clock

    async def hit(self, policy: Policy, identity: str) -> Decision:
        key = f"{self.prefix}:{policy.name}:{identity}"
        now_ms = int(self.clock() * 1000)
        if isinstance(policy.rule, SlidingWindow):
            member = f"{now_ms}:{os.urandom(6).hex()}"
            args = [now_ms, policy.rule.window * 1000, policy.rule.limit, member]
            reply = await self.keyvalue.run(SLIDING_WINDOW, [key], args)
        else:
            reply = await self.keyvalue.run(TOKEN_BUCKET, [key], [now_ms, policy.rule.rate, policy.rule.burst])
        return _decision(policy, *reply)


class RateLimiter:
    """The limiter, with each policy's behaviour for when its Redis is unreachable."""

    def __init__(self, limiter: Limiter, fallback: Limiter) -> None:
        self.limiter = limiter
        self.fallback = fallback
        self._skip_redis_until = 0.0

    async def hit(self, policy: Policy, identity: str) -> Decision:
        if time.monotonic() >= self._skip_redis_until:
            try:
                return await self.limiter.hit(policy, identity)
            except KeyValueUnavailable as exc:
                self._skip_redis_until = time.monotonic() + _RETRY_REDIS_AFTER_SECONDS
                logger.error(
                    "rate limiter: Redis unreachable (%s); for %.0f s fail-open policies use in-process limits "
                    "and fail-closed ones refuse requests",
                    exc,
                    _RETRY_REDIS_AFTER_SECONDS,
                )
        if policy.fail_closed:
            REDIS_UNAVAILABLE.labels(policy.name, "refused").inc()
            raise ServiceUnavailable(
                "This endpoint is temporarily unavailable; try again shortly.",
                code="rate_limiter_unavailable",
                headers={"Retry-After": str(math.ceil(_RETRY_REDIS_AFTER_SECONDS))},
            )
        REDIS_UNAVAILABLE.labels(policy.name, "in_process").inc()
        return await self.fallback.hit(policy, identity)


_limiters: dict[str, RateLimiter] = {}


def get_limiter() -> RateLimiter:
    url = settings.RATE_LIMIT_REDIS_URL
    limiter = _limiters.get(url)
    if limiter is None:
        prefix = f"{settings.CACHE_KEY_PREFIX}:rl"
        # Without a URL the limiter is in process memory already, which always answers: no fallback is ever used.
        shared = Limiter(get_keyvalue(url, timeout=_REDIS_TIMEOUT_SECONDS), prefix)
        limiter = _limiters.setdefault(url, RateLimiter(shared, fallback=Limiter(MemoryKeyValue(), prefix)))
    return limiter


def client_identity(ip: str, user_id: int | str | None = None) -> str:
    """The user when known; otherwise the address, with IPv6 taken per /64 (what one subscriber usually holds,
    so rotating through it does not multiply the quota)."""
    if user_id is not None:
        return f"user:{user_id}"
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return f"ip:{ip}"
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return f"ip:{address.ipv4_mapped}"
        return f"ip:{ipaddress.ip_network(f'{address}/64', strict=False)}"
    return f"ip:{address}"


async def check(policy_name: str, identity: str) -> Decision:
    """Count one request; raises RateLimited (429) over the limit, ServiceUnavailable (503) when a fail-closed
    policy cannot be checked."""
    decision = await get_limiter().hit(Policy.from_settings(policy_name), identity)
    if not decision.allowed:
        RATE_LIMITED.labels(policy_name).inc()
        refusal = RateLimited(math.ceil(decision.retry_after_ms / 1000))
        refusal.headers.update(decision.headers())
        raise refusal
    return decision
