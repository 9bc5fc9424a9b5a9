from datetime import datetime
from typing import Annotated

from ninja import Field, Schema
from pydantic import AfterValidator, StringConstraints

from accounts.schemas import StrictSchema, UserPublic
from core.pagination import PageParams, PaginationOut
from core.params import MAX_OBJECT_ID
from posts.models import MAX_BODY_LENGTH, MAX_TITLE_LENGTH, PostStatus

MAX_SEARCH_LENGTH = 200
MAX_CURSOR_LENGTH = 512


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refused here rather than as a database error.
    if "\x00" in value:
        raise ValueError("Must not contain NUL characters.")
    return value


Title = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TITLE_LENGTH), AfterValidator(_no_nul)
]
Body = Annotated[str, Field(max_length=MAX_BODY_LENGTH), AfterValidator(_no_nul)]
Search = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=MAX_SEARCH_LENGTH), AfterValidator(_no_nul)
]
AuthorId = Annotated[int, Field(ge=1, le=MAX_OBJECT_ID)]


class PostIn(StrictSchema):
    title: Title
    body: Body = ""
    status: PostStatus = PostStatus.DRAFT


class PostPatchIn(StrictSchema):
    # Defaults are not validated, so an omitted field stays None while an explicit null is refused (422).
    title: Title = None
    body: Body = None
    status: PostStatus = None


class PostFilters(Schema):
    author: AuthorId | None = None
    status: PostStatus | None = None
    search: Search | None = Field(None, description="Case-insensitive match in the title or the body.")


class PostListParams(PageParams, PostFilters):
    pass


class PostCursorParams(PostFilters):
    cursor: str | None = Field(None, max_length=MAX_CURSOR_LENGTH, description="`next_cursor` of the previous page.")
    limit: int = Field(20, ge=1, le=100)


class AuthorOut(Schema):
    id: int
    username: str


class AuthorOutV2(AuthorOut):
    display_name: str


class PostOut(Schema):
    id: int
    title: str
    body: str
    status: PostStatus
    author: AuthorOut
    created_at: datetime
    updated_at: datetime


class PostOutV2(PostOut):
    author: AuthorOutV2
    excerpt: str = Field(description="The first 200 characters of the body.")


class AuthorPostsOut(Schema):
    author: UserPublic
    items: list[PostOut]
    pagination: PaginationOut


class PostCursorPageOut(Schema):
    items: list[PostOutV2]
    next_cursor: str | None
