"""The hot reads' bodies built without pydantic (core.schemas.Shaped) are what their response schemas give."""

from datetime import UTC, datetime

import orjson
import pytest

from accounts.models import User
from accounts.schemas import UserPublic
from accounts.selectors import PUBLIC_USER_FIELDS
from core.pagination import Page
from core.renderers import dumps
from posts.api import author_page_body, cursor_page_body, page_body_v1, post_body_v1, post_body_v2
from posts.schemas import AuthorPostsOut, PostCursorPageOut, PostOut, PostOutV2
from posts.selectors import _snapshot


def _row(status: str, post_id: int = 7) -> dict:
    when = datetime(2026, 11, 26, 8, 0, 0, 123456, tzinfo=UTC)
    return {
        "id": post_id,
        "title": "A title",
        "body": "b" * 300,
        "status": status,
        "created_at": when,
        "updated_at": when,
        "author_id": 3,
        "author__username": "writer",
        "author__display_name": "The Writer",
    }


@pytest.mark.parametrize("status", ["published", "draft"])
@pytest.mark.parametrize(("shape", "schema"), [(post_body_v1, PostOut), (post_body_v2, PostOutV2)])
def test_post_bodies_match_their_schemas(shape, schema, status):
    snapshot = _snapshot(_row(status))
    expected = schema.model_validate(snapshot).model_dump()
    assert dumps(shape(snapshot)) == dumps(expected)
    assert orjson.loads(dumps(shape(snapshot))) == orjson.loads(dumps(expected))


PAGINATION = {"page": 3, "per_page": 2, "total": 41, "pages": 21}
AUTHOR = {"id": 3, "username": "writer", "display_name": "The Writer", "date_joined": datetime(2026, 1, 2, tzinfo=UTC)}


def _snapshots() -> list[dict]:
    return [_snapshot(_row(status, post_id)) for post_id, status in ((9, "published"), (8, "draft"))]


@pytest.mark.parametrize(
    ("shape", "schema", "page"),
    [
        (page_body_v1, Page[PostOut], {"items": _snapshots(), "pagination": PAGINATION}),
        (page_body_v1, Page[PostOut], {"items": [], "pagination": {**PAGINATION, "total": 0, "pages": 0}}),
        (cursor_page_body, PostCursorPageOut, {"items": _snapshots(), "next_cursor": "signed-cursor"}),
        (cursor_page_body, PostCursorPageOut, {"items": [], "next_cursor": None}),
    ],
)
def test_page_bodies_match_their_schemas(shape, schema, page):
    assert dumps(shape(page)) == dumps(schema.model_validate(page).model_dump())


def test_author_page_body_matches_its_schema():
    page = {"author": AUTHOR, "items": _snapshots(), "pagination": PAGINATION}
    assert dumps(author_page_body(page)) == dumps(AuthorPostsOut.model_validate(page).model_dump())


def test_user_fields_are_the_public_schema_in_its_order():
    assert list(PUBLIC_USER_FIELDS) == list(UserPublic.model_fields)


@pytest.mark.django_db
def test_user_body_matches_its_schema(client):
    user = User.objects.create_user(username="shaped", email="shaped@example.com", password="x7!kq-vault-rain")
    response = client.get(f"/api/v2/users/{user.pk}")
    row = User.objects.filter(pk=user.pk).values(*PUBLIC_USER_FIELDS).get()
    assert response.content == dumps(UserPublic.model_validate(row).model_dump())
