"""Who is online in a room, across every server process.

Each open connection is a member `"<user id>:<username>:<channel name>"` of a per-room sorted set scored by its
expiry time. Connections refresh their expiry with a heartbeat; a process that crashes stops heartbeating and its
connections expire. Every step that decides whether a *user* joined or left (their first connection arrived,
their last one went, or expired) is one atomic script on the key-value backend (`core.keyvalue`), so exactly one
process announces each join and leave. Each script's Python twin keeps the same structure in process memory, a
dictionary of members and expiries, for the embedded default (one process, no Redis).
"""

import time
from dataclasses import dataclass

from django.conf import settings

from core.keyvalue import KeyValue, MemoryKeys, Script, get_keyvalue


def _identity(member: str) -> str:
    """The user of a member: `<user id>:<username>` of `<user id>:<username>:<channel name>`."""
    return member.rsplit(":", 1)[0]


def _live(room: dict[str, float], now: float) -> list[str]:
    return [member for member, expiry in room.items() if expiry > now]


def _join_in_memory(keys: MemoryKeys, names: list[str], args: list) -> int:
    (key,), (now, expiry, member, user_prefix, key_ttl) = names, args
    room = keys.setdefault(key, {})
    first = not any(live.startswith(user_prefix) for live in _live(room, now))
    room[member] = expiry
    keys.expire(key, key_ttl)
    return int(first)


# ARGV: now, expiry, member, user prefix, key TTL. Returns 1 when no other live connection of the user was there.
JOIN = Script(
    name="presence.join",
    lua="""
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')
local first = 1
for _, member in ipairs(live) do
  if string.sub(member, 1, #ARGV[4]) == ARGV[4] then first = 0 break end
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return first
""",
    memory=_join_in_memory,
)


def _heartbeat_in_memory(keys: MemoryKeys, names: list[str], args: list) -> None:
    (key,), (expiry, member, key_ttl) = names, args
    room = keys.get(key)
    if room is not None and member in room:
        room[member] = expiry
    keys.expire(key, key_ttl)


# ARGV: expiry, member, key TTL. XX: a connection that was swept as dead must not come back silently (its "leave"
# was announced).
HEARTBEAT = Script(
    name="presence.heartbeat",
    lua="""
redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
""",
    memory=_heartbeat_in_memory,
)


def _leave_in_memory(keys: MemoryKeys, names: list[str], args: list) -> int:
    (key,), (now, member, user_prefix) = names, args
    room = keys.get(key)
    if room is None or room.pop(member, None) is None:
        return 0
    return int(not any(live.startswith(user_prefix) for live in _live(room, now)))


# ARGV: now, member, user prefix. Returns 1 when this was the user's last live connection.
LEAVE = Script(
    name="presence.leave",
    lua="""
if redis.call('ZREM', KEYS[1], ARGV[2]) == 0 then return 0 end
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')
for _, member in ipairs(live) do
  if string.sub(member, 1, #ARGV[3]) == ARGV[3] then return 0 end
end
return 1
""",
    memory=_leave_in_memory,
)


def _sweep_in_memory(keys: MemoryKeys, names: list[str], args: list) -> list[str]:
    (key,), (now,) = names, args
    room = keys.get(key) or {}
    # In Redis's order: by expiry, then by name.
    expired = sorted((member for member, expiry in room.items() if expiry <= now), key=lambda m: (room[m], m))
    for member in expired:
        del room[member]
    live_users = {_identity(member) for member in room}
    return [user for user in dict.fromkeys(map(_identity, expired)) if user not in live_users]


# ARGV: now. Removes expired connections; returns "<id>:<username>" of users left with no live connection.
SWEEP = Script(
    name="presence.sweep",
    lua="""
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
""",
    memory=_sweep_in_memory,
)


def _online_in_memory(keys: MemoryKeys, names: list[str], args: list) -> list[str]:
    (key,), (now,) = names, args
    return _live(keys.get(key) or {}, now)


# ARGV: now. The live connections.
ONLINE = Script(
    name="presence.online",
    lua="return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')",
    memory=_online_in_memory,
)


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


class PresenceRegistry:
    def __init__(self, keyvalue: KeyValue, prefix: str) -> None:
        self.keyvalue = keyvalue
        self.prefix = prefix

    def _key(self, room_id: int) -> str:
        return f"{self.prefix}:presence:{room_id}"

    async def join(self, presence: Presence) -> bool:
        now, ttl = time.time(), settings.CHAT_PRESENCE_TTL_SECONDS
        args = [now, now + ttl, presence.member, presence.user_prefix, ttl * 4]
        return bool(await self.keyvalue.run(JOIN, [self._key(presence.room_id)], args))

    async def heartbeat(self, presence: Presence) -> None:
        ttl = settings.CHAT_PRESENCE_TTL_SECONDS
        args = [time.time() + ttl, presence.member, ttl * 4]
        await self.keyvalue.run(HEARTBEAT, [self._key(presence.room_id)], args)

    async def leave(self, presence: Presence) -> bool:
        args = [time.time(), presence.member, presence.user_prefix]
        return bool(await self.keyvalue.run(LEAVE, [self._key(presence.room_id)], args))

    async def sweep(self, room_id: int) -> list[dict]:
        return [_user(identity) for identity in await self.keyvalue.run(SWEEP, [self._key(room_id)], [time.time()])]

    async def online(self, room_id: int) -> list[dict]:
        members = await self.keyvalue.run(ONLINE, [self._key(room_id)], [time.time()])
        users = {_identity(member) for member in members}
        return sorted((_user(identity) for identity in users), key=lambda user: user["id"])


def get_presence_registry() -> PresenceRegistry:
    return PresenceRegistry(get_keyvalue(), settings.CACHE_KEY_PREFIX)
