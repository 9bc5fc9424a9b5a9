"""Where posts live in the cache, and how writes keep it truthful.

- A post's detail is cached by id as its snapshot (the dict both API versions render from). Readers fill it with
  `add` (only if absent); writers replace it with `set` once their transaction commits, and a delete leaves a
  marker for the same time. So a reader that loaded the old row just before a write can never put it back over the
  writer's value, and the writer's own next read sees what it wrote.
- Public lists are cached under a generation token that every write to posts (or to a post author's public name)
  replaces: all cached pages become unreachable at once and expire on their own. A reader that started before the
  write stores its page under the old token, where nobody looks any more.
- Large totals of the v1 list (past POSTS_EXACT_COUNT_LIMIT) are cached briefly by filter, without a generation:
  counting millions of rows after every write is exactly the cost the cache is there to avoid.

Every cache failure degrades to reading the database (core.cache).
"""

import hashlib
import uuid

from django.conf import settings

from core import cache

# Bumped when the snapshot's shape changes, so a deploy never reads entries written by the previous release.
_FORMAT = "p1"
_LIST_GENERATION_KEY = f"posts:{_FORMAT}:lists:generation"
# Stored in place of a deleted post's snapshot.
DELETED = "deleted"


def _detail_key(post_id: int) -> str:
    return f"posts:{_FORMAT}:detail:{post_id}"


def _digest(parts: tuple) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=12).hexdigest()


async def detail_get(post_id: int):
    """The cached snapshot, DELETED, or None on a miss (always, with RESPONSE_CACHE off)."""
    if not settings.RESPONSE_CACHE:
        return None
    return await cache.get(_detail_key(post_id))


async def detail_fill(snapshot: dict) -> None:
    if not settings.RESPONSE_CACHE:
        return
    await cache.add(_detail_key(snapshot["id"]), snapshot, settings.POSTS_DETAIL_CACHE_SECONDS)


def details_store(snapshots: list[dict]) -> None:
    cache.set_many_now({_detail_key(s["id"]): s for s in snapshots}, settings.POSTS_DETAIL_CACHE_SECONDS)


def details_deleted(post_ids: list[int]) -> None:
    cache.set_many_now({_detail_key(pk): DELETED for pk in post_ids}, settings.POSTS_DETAIL_CACHE_SECONDS)


def details_drop(post_ids: list[int]) -> None:
    cache.delete_many_now([_detail_key(pk) for pk in post_ids])


def lists_changed() -> None:
    cache.set_many_now({_LIST_GENERATION_KEY: uuid.uuid4().hex}, None)


async def list_key(kind: str, *params) -> str | None:
    """The key of one public list page under the current generation; None when the cache is unavailable (or
    turned off: RESPONSE_CACHE)."""
    if not settings.RESPONSE_CACHE:
        return None
    generation = await cache.get(_LIST_GENERATION_KEY)
    if generation is None:
        # First use (or the token was evicted): agree on one token with any concurrent reader.
        await cache.add(_LIST_GENERATION_KEY, uuid.uuid4().hex, None)
        generation = await cache.get(_LIST_GENERATION_KEY)
        if generation is None:
            return None
    return f"posts:{_FORMAT}:list:{generation}:{kind}:{_digest(params)}"


async def list_get(key: str):
    return await cache.get(key)


async def list_fill(key: str, page: dict) -> None:
    await cache.add(key, page, settings.POSTS_LIST_CACHE_SECONDS)


def _count_key(scope: tuple) -> str:
    return f"posts:{_FORMAT}:count:{_digest(scope)}"


async def large_count_get(scope: tuple) -> int | None:
    return await cache.get(_count_key(scope))


async def large_count_fill(scope: tuple, total: int) -> None:
    await cache.set_value(_count_key(scope), total, settings.POSTS_COUNT_CACHE_SECONDS)
