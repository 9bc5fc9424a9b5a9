"""Short-lived security state (revoked access tokens, login attempt counters, WebSocket tickets) on the key-value
backend (`core.keyvalue`), under keys of its own. Callers get `KeyValueUnavailable` when Redis cannot be reached
and decide themselves whether to fail open or closed.
"""

from django.conf import settings

from core.keyvalue import KeyValue, MemoryKeys, Script, get_keyvalue


def _hit_in_memory(keys: MemoryKeys, names: list[str], args: list) -> list[int]:
    (key,), (window,) = names, args
    count = (keys.get(key) or 0) + 1
    keys.set(key, count)
    if count == 1:
        keys.expire(key, int(window))
    return [count, round(keys.ttl(key))]


# Count a hit and start the window's clock on the first one.
HIT = Script(
    name="store.hit",
    lua="""
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return {count, redis.call('TTL', KEYS[1])}
""",
    memory=_hit_in_memory,
)


def _unhit_in_memory(keys: MemoryKeys, names: list[str], args: list) -> int:
    count = keys.get(names[0])
    if not count:
        return 0
    keys.set(names[0], count - 1)
    return count - 1


# Take back one hit (the window's clock runs on); nothing for a window that has ended.
UNHIT = Script(
    name="store.unhit",
    lua="""
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count <= 0 then return 0 end
return redis.call('DECR', KEYS[1])
""",
    memory=_unhit_in_memory,
)


class Store:
    def __init__(self, keyvalue: KeyValue, prefix: str) -> None:
        self.keyvalue = keyvalue
        self.prefix = prefix

    def _key(self, key: str) -> str:
        return f"{self.prefix}:{key}"

    async def set(self, key: str, value: str, ttl: int) -> None:
        await self.keyvalue.set(self._key(key), value, ttl)

    async def exists(self, key: str) -> bool:
        return await self.keyvalue.exists(self._key(key))

    async def take(self, key: str) -> str | None:
        """Read and delete in one step, so a value can be consumed at most once."""
        return await self.keyvalue.take(self._key(key))

    async def delete(self, key: str) -> None:
        await self.keyvalue.delete(self._key(key))

    async def hit(self, key: str, window: int) -> tuple[int, int]:
        """Count one hit in a fixed window that starts with the first hit; returns (hits, seconds left)."""
        count, ttl = await self.keyvalue.run(HIT, [self._key(key)], [int(window)])
        return count, max(ttl, 1)

    async def unhit(self, key: str) -> None:
        """Take back one hit that turned out not to be one (the attempt never happened)."""
        await self.keyvalue.run(UNHIT, [self._key(key)], [])


def get_store() -> Store:
    return Store(get_keyvalue(), f"{settings.CACHE_KEY_PREFIX}:kv")
