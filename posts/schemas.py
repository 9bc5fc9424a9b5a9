from datetime import datetime
from typing import Annotated

from ninja import Field, Schema
from pydantic import AfterValidator, StringConstraints

from accounts.schemas import UserPublic
from core.pagination import CursorPage, CursorParams, PageParams, PaginationOut
from core.params import MAX_OBJECT_ID
from core.schemas import StrictSchema, refuse_unstorable_text
from posts.models import MAX_BODY_LENGTH, MAX_TITLE_LENGTH, PostStatus

MAX_SEARCH_LENGTH = 200


Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TITLE_LENGTH)]
Body = Annotated[str, Field(max_length=MAX_BODY_LENGTH)]
Search = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=MAX_SEARCH_LENGTH), AfterValidator(refuse_unstorable_text)
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


class PostCursorParams(CursorParams, PostFilters):
    pass


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


class PostCursorPageOut(CursorPage[PostOutV2]):
    pass


class AuthorPostsCursorOut(Schema):
    author: UserPublic
    items: list[PostOutV2]
    next_cursor: str | None
