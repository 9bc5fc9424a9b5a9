"""fastpath.responses: a projected body is byte for byte what ninja's validation gives, and everything the
projection cannot vouch for goes to ninja. (Every API test also checks each projected body against its schema:
the suite runs with FAST_PATH_CHECK_BODIES.)"""

from datetime import UTC, datetime

import pytest
from ninja import Schema
from pydantic import field_validator

from accounts.schemas import TokenIn, UserPublic
from core.pagination import Page, PaginationOut
from core.renderers import dumps
from fastpath import responses
from fastpath.responses import _projector, _Unprojectable
from posts.schemas import AuthorPostsOut, PostCursorPageOut, PostOut, PostOutV2
from posts.selectors import _snapshot

WHEN = datetime(2026, 11, 26, 8, 0, 0, 123456, tzinfo=UTC)


def row(status: str, post_id: int = 7) -> dict:
    return {
        "id": post_id,
        "title": "A title",
        "body": "b" * 300,
        "status": status,
        "created_at": WHEN,
        "updated_at": WHEN,
        "author_id": 3,
        "author__username": "writer",
        "author__display_name": "The Writer",
    }


PAGINATION = {"page": 3, "per_page": 2, "total": 41, "pages": 21}
AUTHOR = {"id": 3, "username": "writer", "display_name": "The Writer", "date_joined": WHEN}
SNAPSHOTS = [_snapshot(row(status, post_id)) for post_id, status in ((9, "published"), (8, "draft"))]

CASES = [
    (PostOut, _snapshot(row("published"))),
    (PostOutV2, _snapshot(row("draft"))),
    (UserPublic, AUTHOR),
    (Page[PostOut], {"items": SNAPSHOTS, "pagination": PAGINATION}),
    (Page[PostOut], {"items": [], "pagination": {**PAGINATION, "total": 0, "pages": 0}}),
    (PostCursorPageOut, {"items": SNAPSHOTS, "next_cursor": "signed-cursor"}),
    (PostCursorPageOut, {"items": [], "next_cursor": None}),
    (AuthorPostsOut, {"author": AUTHOR, "items": SNAPSHOTS, "pagination": PAGINATION}),
    (list[UserPublic], [AUTHOR, {**AUTHOR, "id": 4}]),
]


@pytest.mark.parametrize(("schema", "value"), CASES, ids=lambda case: getattr(case, "__name__", None))
def test_projections_are_the_schemas_dumps_byte_for_byte(schema, value):
    project = _projector(schema)
    assert project is not None
    wrapped = type("Response", (Schema,), {"__annotations__": {"response": schema}})
    expected = wrapped.model_validate({"response": value}).model_dump()["response"]
    assert dumps(project(value)) == dumps(expected)


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        (PostOut, {**_snapshot(row("published")), "id": "7"}),  # a string for an int: pydantic would coerce it
        (PostOut, {**_snapshot(row("published")), "status": "archived"}),  # not one of the enum's values
        (PostOut, {key: value for key, value in _snapshot(row("published")).items() if key != "title"}),
        (PostOut, {**_snapshot(row("published")), "created_at": WHEN.isoformat()}),
        (PaginationOut, {**PAGINATION, "total": True}),  # a bool is not an int here
        (UserPublic, object()),  # a model instance, say: ninja reads its attributes
        (Page[PostOut], {"items": tuple(SNAPSHOTS), "pagination": PAGINATION}),
    ],
)
def test_values_the_projection_cannot_vouch_for_go_to_ninja(schema, value):
    with pytest.raises(_Unprojectable):
        _projector(schema)(value)


class WithValidator(Schema):
    name: str

    @field_validator("name")
    @classmethod
    def shout(cls, value: str) -> str:
        return value.upper()


class WithResolver(Schema):
    name: str

    @staticmethod
    def resolve_name(obj) -> str:
        return "resolved"


def test_schemas_with_anything_a_projection_would_not_reproduce_are_left_to_ninja():
    # Validators, resolvers, constraints (TokenIn's lengths), unions of several types.
    for schema in (WithValidator, WithResolver, TokenIn, int | str):
        assert _projector(schema) is None


@pytest.mark.django_db(transaction=True)
def test_the_body_check_fails_a_request_whose_projection_differs(client, make_user, monkeypatch):
    user = make_user()
    assert client.get(f"/api/v2/users/{user.pk}").status_code == 200
    honest = responses._response_projector

    def wrong(operation, status):
        project = honest(operation, status)
        return project and (lambda value: {**project(value), "username": "someone else"})

    monkeypatch.setattr(responses, "_response_projector", wrong)
    response = client.get(f"/api/v2/users/{user.pk}")
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
