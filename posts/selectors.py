"""Reads of the posts app. Everything returned is evaluated: posts come back as snapshots, plain dicts that both API
versions render from and that the cache stores as they are.

Visibility: published posts are seen by everyone; a draft only by its author and by staff. What a caller may not
see does not exist for them (404, never listed).
"""

from dataclasses import dataclass

from django.conf import settings
from django.db.models import Q, QuerySet

from accounts.selectors import user_public_get
from core.errors import NotFound
from core.pagination import Keyset, PageParams, pagination_meta
from core.renderers import iso_utc
from posts import cache as posts_cache
from posts.models import Post, PostStatus

EXCERPT_LENGTH = 200

# One query per list page: the author's public fields come in through the join, never one query per post.
_COLUMNS = (
    "id",
    "title",
    "body",
    "status",
    "created_at",
    "updated_at",
    "author_id",
    "author__username",
    "author__display_name",
)
_NEWEST_FIRST = ("-created_at", "-id")
# Querysets are lazy: these are built once, and each request only adds its own filters to a copy.
_ROWS = Post.objects.values(*_COLUMNS)
_ROWS_NEWEST_FIRST = _ROWS.order_by(*_NEWEST_FIRST)


def _snapshot(row: dict) -> dict:
    return {
        "id": row["id"],
        "title": row["title"],
        "body": row["body"],
        "status": str(row["status"]),
        "author": {
            "id": row["author_id"],
            "username": row["author__username"],
            "display_name": row["author__display_name"],
        },
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "excerpt": row["body"][:EXCERPT_LENGTH],
    }


def snapshot_of(post: Post) -> dict:
    """The snapshot of a post whose author is loaded (services, after a write)."""
    return _snapshot(
        {
            **{name: getattr(post, name) for name in _COLUMNS[:7]},
            "author__username": post.author.username,
            "author__display_name": post.author.display_name,
        }
    )


def can_view(viewer, *, status: str, author_id: int) -> bool:
    return status == PostStatus.PUBLISHED or (viewer.is_authenticated and (viewer.is_staff or viewer.pk == author_id))


def can_change(viewer, *, author_id: int) -> bool:
    return viewer.is_authenticated and (viewer.is_staff or viewer.pk == author_id)


# --- one post --------------------------------------------------------------------------------------------


async def post_get_visible(*, viewer, post_id: int) -> dict:
    snapshot = await posts_cache.detail_get(post_id)
    if snapshot == posts_cache.DELETED:
        raise NotFound("No such post.")
    if snapshot is None:
        row = await _ROWS.filter(pk=post_id).afirst()
        if row is None:
            raise NotFound("No such post.")
        snapshot = _snapshot(row)
        await posts_cache.detail_fill(snapshot)
    if not can_view(viewer, status=snapshot["status"], author_id=snapshot["author"]["id"]):
        raise NotFound("No such post.")
    return snapshot


def published_post_get(*, post_id: int) -> dict | None:
    """A published post as v1's PostOut shows it, ready for JSON, or None when it was deleted or is a draft: what
    other apps may tell the world about it (the webhooks' events). Synchronous, for Celery tasks."""
    post = Post.objects.select_related("author").filter(pk=post_id, status=PostStatus.PUBLISHED).first()
    if post is None:
        return None
    return {
        "id": post.pk,
        "title": post.title,
        "body": post.body,
        "status": str(post.status),
        "author": {"id": post.author_id, "username": post.author.username},
        "created_at": iso_utc(post.created_at),
        "updated_at": iso_utc(post.updated_at),
    }


# What an export (the jobs app) writes of each post, in order.
EXPORT_COLUMNS = ("id", "title", "body", "status", "author_id", "author_username", "created_at", "updated_at")


def post_rows_for_export(*, author_id: int | None = None) -> QuerySet:
    """Every post (or every post of one author, drafts included), oldest first, as value tuples in EXPORT_COLUMNS
    order. Lazy on purpose, unlike the other reads: the caller streams it through a server-side cursor
    (`.iterator(chunk_size)`), since an export may cover the whole table."""
    posts = Post.objects.order_by("id")
    if author_id is not None:
        posts = posts.filter(author_id=author_id)
    return posts.values_list(*EXPORT_COLUMNS[:5], "author__username", *EXPORT_COLUMNS[6:])


# --- lists -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scope:
    """The posts a caller may see under the given filters, as simple predicates the indexes can serve."""

    where: Q
    # Exactly what an anonymous caller would see: the same for everyone, so it may be cached once for all.
    public: bool


def _scope(viewer, *, author_id: int | None, status: str | None) -> _Scope | None:
    """None when nothing can match (someone else's drafts)."""
    by_author = {"author_id": author_id} if author_id else {}
    if viewer.is_authenticated and viewer.is_staff:
        return _Scope(Q(**by_author, **({"status": status} if status else {})), public=status == PostStatus.PUBLISHED)
    me = viewer.pk if viewer.is_authenticated else None
    sees_own_drafts = me is not None and author_id in (None, me)
    if status == PostStatus.DRAFT:
        return _Scope(Q(author_id=me, status=PostStatus.DRAFT), public=False) if sees_own_drafts else None
    if status == PostStatus.PUBLISHED or not sees_own_drafts:
        return _Scope(Q(status=PostStatus.PUBLISHED, **by_author), public=True)
    if author_id == me:
        return _Scope(Q(author_id=me), public=False)
    return _Scope(Q(status=PostStatus.PUBLISHED) | Q(author_id=me), public=False)


def _matching(scope: _Scope, search: str | None, *, rows=Post.objects):
    posts = rows.filter(scope.where)
    if search:
        posts = posts.filter(Q(title__icontains=search) | Q(body__icontains=search))
    return posts


async def _total(posts, *, count_key: tuple) -> int:
    """Exact up to POSTS_EXACT_COUNT_LIMIT (that count stops after limit + 1 matching rows, whatever the table
    size); beyond it, an exact count cached for POSTS_COUNT_CACHE_SECONDS per filter, so it may lag the latest
    writes by that long."""
    cached = await posts_cache.large_count_get(count_key)
    if cached is not None:
        return cached
    limit = settings.POSTS_EXACT_COUNT_LIMIT
    total = await posts.order_by()[: limit + 1].acount()
    if total <= limit:
        return total
    total = await posts.order_by().acount()
    await posts_cache.large_count_fill(count_key, total)
    return total


async def post_page(
    *,
    viewer,
    params: PageParams,
    author_id: int | None = None,
    status: str | None = None,
    search: str | None = None,
) -> dict:
    """One page of posts, newest first, with the total (see _total for how exact it is)."""
    scope = _scope(viewer, author_id=author_id, status=status)
    if scope is None:
        return {"items": [], "pagination": pagination_meta(params, 0)}
    cache_key = None
    if scope.public and not search and params.page <= settings.POSTS_LIST_CACHE_PAGES:
        cache_key = await posts_cache.list_key("page", params.page, params.per_page, author_id)
        if cache_key is not None and (cached := await posts_cache.list_get(cache_key)) is not None:
            return cached
    posts = _matching(scope, search)
    total = await _total(posts, count_key=(str(scope.where), search))
    rows = _matching(scope, search, rows=_ROWS_NEWEST_FIRST)[params.offset : params.offset + params.per_page]
    page = {"items": [_snapshot(row) async for row in rows], "pagination": pagination_meta(params, total)}
    if cache_key is not None:
        await posts_cache.list_fill(cache_key, page)
    return page


async def author_post_page(*, viewer, author_id: int, params: PageParams) -> dict:
    author = await user_public_get(user_id=author_id)
    return {"author": author, **await post_page(viewer=viewer, params=params, author_id=author_id)}


# --- keyset (cursor) pagination --------------------------------------------------------------------------

# The salt is the one cursors were first signed with: cursors clients hold stay valid.
POSTS_NEWEST_FIRST = Keyset(Post, _NEWEST_FIRST, salt="posts.cursor")


async def post_cursor_page(
    *,
    viewer,
    limit: int,
    cursor: str | None = None,
    author_id: int | None = None,
    status: str | None = None,
    search: str | None = None,
) -> dict:
    """Posts strictly after the cursor's (created_at, id), newest first. A post that existed when the walk began is
    seen exactly once however many are added meanwhile: new posts sort before the position already reached."""
    position = POSTS_NEWEST_FIRST.position(cursor) if cursor else None
    scope = _scope(viewer, author_id=author_id, status=status)
    if scope is None:
        return {"items": [], "next_cursor": None}
    cache_key = None
    if scope.public and not search and position is None:
        cache_key = await posts_cache.list_key("cursor", limit, author_id)
        if cache_key is not None and (cached := await posts_cache.list_get(cache_key)) is not None:
            return cached
    posts = _matching(scope, search, rows=_ROWS_NEWEST_FIRST)
    page = await POSTS_NEWEST_FIRST.page_after(posts, position, limit=limit, item=_snapshot)
    if cache_key is not None:
        await posts_cache.list_fill(cache_key, page)
    return page


async def author_post_cursor_page(*, viewer, author_id: int, cursor: str | None, limit: int) -> dict:
    author = await user_public_get(user_id=author_id)
    return {"author": author, **await post_cursor_page(viewer=viewer, author_id=author_id, cursor=cursor, limit=limit)}
