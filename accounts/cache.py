"""Where users' public profiles live in the cache (`GET /users/{id}`, the author of an author's page).

The same discipline as posts/cache.py: readers fill a missing entry with `add` (only if absent); every write that
can change what the profile shows (username, display name, active or not, the account itself) replaces the entry
once its transaction commits, with the row as it now is, or with a marker when the user is no longer public. So a
reader that loaded the old row just before a write can never put it back over the writer's value. Misses of users
that do not exist are not cached: a new account is visible at once.

Every cache failure degrades to reading the database (core.cache).
"""

from django.conf import settings

from core import cache

# Bumped when the entry's shape changes, so a deploy never reads entries written by the previous release.
_FORMAT = "u1"
# Stored in place of a user who is inactive or gone.
GONE = "gone"
# The fields of the user model the public profile shows (accounts.selectors.PUBLIC_USER_FIELDS, and is_active).
SHOWN_FIELDS = frozenset({"username", "display_name", "date_joined", "is_active"})


def _key(user_id: int) -> str:
    return f"users:{_FORMAT}:public:{user_id}"


async def profile_get(user_id: int):
    """The cached public row, GONE, or None on a miss (always, with RESPONSE_CACHE off)."""
    if not settings.RESPONSE_CACHE:
        return None
    return await cache.get(_key(user_id))


async def profile_fill(row: dict) -> None:
    if settings.RESPONSE_CACHE:
        await cache.add(_key(row["id"]), row, settings.USERS_PROFILE_CACHE_SECONDS)


def profiles_store(rows: dict[int, dict | None]) -> None:
    """Writers, after commit: each user's current public row, or None for one who is no longer public."""
    cache.set_many_now(
        {_key(user_id): GONE if row is None else row for user_id, row in rows.items()},
        settings.USERS_PROFILE_CACHE_SECONDS,
    )
