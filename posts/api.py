"""Posts endpoints. v1: offset pages with a total. v2: cursor pages and PostOutV2. Where the two versions answer
alike, one router serves both; v2's own operations call v1's where only the shape differs.

Rate limits, and the 429/503 answers they add, are applied to every operation in config/api.py.
"""

import hashlib

import orjson
from asgiref.sync import sync_to_async
from django.http import HttpResponse
from ninja import Query, Router, Status

from accounts.auth import jwt_auth, optional_jwt_auth
from core.pagination import CursorParams, Page, PageParams
from core.params import ObjectId
from core.paths import api_url, version_of
from core.schemas import INVALID, NOT_FOUND, UNAUTHENTICATED, ErrorOut
from posts import selectors, services
from posts.models import PostStatus
from posts.schemas import (
    AuthorPostsCursorOut,
    AuthorPostsOut,
    PostCursorPageOut,
    PostCursorParams,
    PostIn,
    PostListParams,
    PostOut,
    PostOutV2,
    PostPatchIn,
)

posts_router = Router(tags=["posts"])
authors_router = Router(tags=["posts"])
posts_v2_router = Router(tags=["posts"])
authors_v2_router = Router(tags=["posts"])

# Optional auth still answers 401 to an Authorization header that is present but invalid.


def _not_modified(request, response: HttpResponse, snapshot: dict, representation: str) -> bool:
    """Sets the validators of a post's representation; True when the client's copy is current (-> 304)."""
    digest = hashlib.blake2b(orjson.dumps(snapshot, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()
    etag = f'"{representation}-{digest}"'
    response["ETag"] = etag
    # Revalidate every time; a draft is for its author's (and staff's) eyes only, never a shared cache's.
    response["Cache-Control"] = "no-cache" if snapshot["status"] == PostStatus.PUBLISHED else "private, no-cache"
    presented = request.headers.get("If-None-Match", "")
    if presented.strip() == "*":
        return True
    # Weak comparison (RFC 9110 13.1.2): W/"x" matches "x".
    return etag in {tag.strip().removeprefix("W/") for tag in presented.split(",")}


# --- v1 --------------------------------------------------------------------------------------------------


@posts_router.get(
    "/",
    auth=optional_jwt_auth,
    response={200: Page[PostOut], **UNAUTHENTICATED, **INVALID},
    summary="Posts, newest first; drafts only to their author and staff",
)
async def list_posts(request, params: Query[PostListParams]):
    page = await selectors.post_page(
        viewer=request.auth, params=params, author_id=params.author, status=params.status, search=params.search
    )
    return page


@posts_router.post(
    "/",
    auth=jwt_auth,
    response={201: PostOut, **UNAUTHENTICATED, **INVALID},
    summary="Write a post (a draft unless status is published)",
)
async def create_post(request, payload: PostIn, response: HttpResponse):
    post = await sync_to_async(services.post_create)(
        author=request.auth, title=payload.title, body=payload.body, status=payload.status
    )
    response["Location"] = api_url("post", version=version_of(request), post_id=post["id"])
    return Status(201, post)


@posts_router.get(
    "/{post_id}",
    url_name="post",
    auth=optional_jwt_auth,
    response={200: PostOut, 304: None, **UNAUTHENTICATED, **NOT_FOUND, **INVALID},
    summary="One post; supports If-None-Match",
)
async def get_post(request, post_id: ObjectId, response: HttpResponse):
    post = await selectors.post_get_visible(viewer=request.auth, post_id=post_id)
    if _not_modified(request, response, post, "v1"):
        return Status(304, None)
    return post


@posts_router.patch(
    "/{post_id}",
    auth=jwt_auth,
    response={200: PostOut, **UNAUTHENTICATED, 403: ErrorOut, **NOT_FOUND, **INVALID},
    summary="Change a post: its author or staff",
)
async def update_post(request, post_id: ObjectId, payload: PostPatchIn):
    changes = payload.model_dump(exclude_unset=True)
    return await sync_to_async(services.post_update)(actor=request.auth, post_id=post_id, **changes)


@posts_router.delete(
    "/{post_id}",
    auth=jwt_auth,
    response={204: None, **UNAUTHENTICATED, 403: ErrorOut, **NOT_FOUND, **INVALID},
    summary="Delete a post: its author or staff",
)
async def delete_post(request, post_id: ObjectId):
    await sync_to_async(services.post_delete)(actor=request.auth, post_id=post_id)
    return Status(204, None)


@authors_router.get(
    "/{author_id}/posts",
    auth=optional_jwt_auth,
    response={200: AuthorPostsOut, **UNAUTHENTICATED, **NOT_FOUND, **INVALID},
    summary="An active author and a page of their posts",
)
async def list_author_posts(request, author_id: ObjectId, params: Query[PageParams]):
    return await selectors.author_post_page(viewer=request.auth, author_id=author_id, params=params)


# --- v2 --------------------------------------------------------------------------------------------------


@posts_v2_router.get(
    "",
    auth=optional_jwt_auth,
    response={200: PostCursorPageOut, **UNAUTHENTICATED, **INVALID},
    summary="Posts, newest first, by cursor: follow next_cursor until it is null",
)
async def list_posts_v2(request, params: Query[PostCursorParams]):
    page = await selectors.post_cursor_page(
        viewer=request.auth,
        cursor=params.cursor,
        limit=params.limit,
        author_id=params.author,
        status=params.status,
        search=params.search,
    )
    return page


@posts_v2_router.get(
    "/{post_id}",
    url_name="post",
    auth=optional_jwt_auth,
    response={200: PostOutV2, 304: None, **UNAUTHENTICATED, **NOT_FOUND, **INVALID},
    summary="One post; supports If-None-Match",
)
async def get_post_v2(request, post_id: ObjectId, response: HttpResponse):
    post = await selectors.post_get_visible(viewer=request.auth, post_id=post_id)
    if _not_modified(request, response, post, "v2"):
        return Status(304, None)
    return post


@posts_v2_router.post(
    "",
    auth=jwt_auth,
    response={201: PostOutV2, **UNAUTHENTICATED, **INVALID},
    summary="Write a post (a draft unless status is published)",
)
async def create_post_v2(request, payload: PostIn, response: HttpResponse):
    return await create_post(request, payload, response)


@posts_v2_router.patch(
    "/{post_id}",
    auth=jwt_auth,
    response={200: PostOutV2, **UNAUTHENTICATED, 403: ErrorOut, **NOT_FOUND, **INVALID},
    summary="Change a post: its author or staff",
)
async def update_post_v2(request, post_id: ObjectId, payload: PostPatchIn):
    return await update_post(request, post_id, payload)


@posts_v2_router.delete(
    "/{post_id}",
    auth=jwt_auth,
    response={204: None, **UNAUTHENTICATED, 403: ErrorOut, **NOT_FOUND, **INVALID},
    summary="Delete a post: its author or staff",
)
async def delete_post_v2(request, post_id: ObjectId):
    return await delete_post(request, post_id)


@authors_v2_router.get(
    "/{author_id}/posts",
    auth=optional_jwt_auth,
    response={200: AuthorPostsCursorOut, **UNAUTHENTICATED, **NOT_FOUND, **INVALID},
    summary="An active author and their posts, newest first, by cursor",
)
async def list_author_posts_v2(request, author_id: ObjectId, params: Query[CursorParams]):
    return await selectors.author_post_cursor_page(
        viewer=request.auth, author_id=author_id, cursor=params.cursor, limit=params.limit
    )
