"""Who is online in a room, across every server process.

Each open connection is a member `"<user id>:<username>:<channel name>"` of a per-room sorted set scored by its
expiry time. Connections refresh their expiry with a heartbeat; a process that crashes stops heartbeating and its
connections expire. Every step that decides whether a *user* joined or left (their first connection arrived,
their last one went, or expired) is one atomic Lua script, so exactly one process announces each join and leave.
The embedded default (one process, no Redis) keeps the same structure in memory.
"""

import threading
import time
from dataclasses import dataclass

from django.conf import settings

from core.redis import LoopRedis

# ARGV: now, expiry, member, user prefix. Returns 1 when no other live connection of the user was there.
_JOIN = """
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')
local first = 1
for _, member in ipairs(live) do
  if string.sub(member, 1, #ARGV[4]) == ARGV[4] then first = 0 break end
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return first
"""

# ARGV: now, member, user prefix. Returns 1 when this was the user's last live connection.
_LEAVE = """
if redis.call('ZREM', KEYS[1], ARGV[2]) == 0 then return 0 end
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')
for _, member in ipairs(live) do
  if string.sub(member, 1, #ARGV[3]) == ARGV[3] then return 0 end
end
return 1
"""

# ARGV: now. Removes expired connections; returns "<id>:<username>" of users left with no live connection.
_SWEEP = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if #expired == 0 then return {} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local live = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  live[string.match(member, '^([^:]*:[^:]*):')] = true
end
local gone, seen = {}, {}
for _, member in ipairs(expired) do
  local user = string.match(member, '^([^:]*:[^:]*):')
  if not live[user] and not seen[user] then
    seen[user] = true
    table.insert(gone, user)
  end
end
return gone
"""


@dataclass(frozen=True)
class Presence:
    """One connection of one user in one room."""

    room_id: int
    user_id: int
    username: str
    channel_name: str

    @property
    def user_prefix(self) -> str:
        return f"{self.user_id}:{self.username}:"

    @property
    def member(self) -> str:
        return self.user_prefix + self.channel_name


def _user(identity: str) -> dict:
    user_id, username = identity.split(":", 2)[:2]
    return {"id": int(user_id), "username": username}


def _distinct_users(members) -> list[dict]:
    identities = {member.rsplit(":", 1)[0] for member in members}
    return sorted((_user(identity) for identity in identities), key=lambda user: user["id"])


class RedisPresenceRegistry:
    def __init__(self, url: str, prefix: str) -> None:
        self.prefix = prefix
        self.redis = LoopRedis(url, scripts={"join": _JOIN, "leave": _LEAVE, "sweep": _SWEEP}, decode_responses=True)

    def _key(self, room_id: int) -> str:
        return f"{self.prefix}:presence:{room_id}"

    async def join(self, presence: Presence) -> bool:
        now, ttl = time.time(), settings.CHAT_PRESENCE_TTL_SECONDS
        args = [now, now + ttl, presence.member, presence.user_prefix, ttl * 4]
        return bool(await self.redis.script("join")(keys=[self._key(presence.room_id)], args=args))

    async def heartbeat(self, presence: Presence) -> None:
        client = self.redis.client()
        expires = time.time() + settings.CHAT_PRESENCE_TTL_SECONDS
        # XX: a connection that was swept as dead must not come back silently (its "leave" was announced).
        await client.zadd(self._key(presence.room_id), {presence.member: expires}, xx=True)
        await client.expire(self._key(presence.room_id), settings.CHAT_PRESENCE_TTL_SECONDS * 4)

    async def leave(self, presence: Presence) -> bool:
        args = [time.time(), presence.member, presence.user_prefix]
        return bool(await self.redis.script("leave")(keys=[self._key(presence.room_id)], args=args))

    async def sweep(self, room_id: int) -> list[dict]:
        sweep = self.redis.script("sweep")
        return [_user(identity) for identity in await sweep(keys=[self._key(room_id)], args=[time.time()])]

    async def online(self, room_id: int) -> list[dict]:
        members = await self.redis.client().zrangebyscore(self._key(room_id), f"({time.time()}", "+inf")
        return _distinct_users(members)


class MemoryPresenceRegistry:
    """The embedded default's registry: the same rules over a dictionary, for a single process."""

    def __init__(self) -> None:
        self._rooms: dict[int, dict[str, float]] = {}
        self._lock = threading.Lock()

    def _live(self, room_id: int, now: float) -> dict[str, float]:
        return {member: expiry for member, expiry in self._rooms.get(room_id, {}).items() if expiry > now}

    async def join(self, presence: Presence) -> bool:
        with self._lock:
            now = time.time()
            first = not any(m.startswith(presence.user_prefix) for m in self._live(presence.room_id, now))
            self._rooms.setdefault(presence.room_id, {})[presence.member] = now + settings.CHAT_PRESENCE_TTL_SECONDS
            return first

    async def heartbeat(self, presence: Presence) -> None:
        with self._lock:
            room = self._rooms.get(presence.room_id, {})
            if presence.member in room:
                room[presence.member] = time.time() + settings.CHAT_PRESENCE_TTL_SECONDS

    async def leave(self, presence: Presence) -> bool:
        with self._lock:
            room = self._rooms.get(presence.room_id, {})
            if room.pop(presence.member, None) is None:
                return False
            return not any(m.startswith(presence.user_prefix) for m in self._live(presence.room_id, time.time()))

    async def sweep(self, room_id: int) -> list[dict]:
        with self._lock:
            now = time.time()
            room = self._rooms.get(room_id, {})
            expired = [member for member, expiry in room.items() if expiry <= now]
            for member in expired:
                del room[member]
            live_users = {m.rsplit(":", 1)[0] for m in room}
            gone = {m.rsplit(":", 1)[0] for m in expired} - live_users
            return [_user(identity) for identity in sorted(gone)]

    async def online(self, room_id: int) -> list[dict]:
        with self._lock:
            return _distinct_users(self._live(room_id, time.time()))


_registries: dict[str, RedisPresenceRegistry | MemoryPresenceRegistry] = {}


def get_presence_registry() -> RedisPresenceRegistry | MemoryPresenceRegistry:
    url = settings.REDIS_URL
    registry = _registries.get(url)
    if registry is None:
        registry = RedisPresenceRegistry(url, settings.CACHE_KEY_PREFIX) if url else MemoryPresenceRegistry()
        _registries[url] = registry
    return registry
