"""The v2 Posts contract: cursor pages that hold still while posts are added, and the PostOutV2 shape."""

from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.core import signing
from django.utils import timezone

from posts.models import Post, PostStatus

pytestmark = pytest.mark.django_db(transaction=True)

V2 = "/api/v2"
POST_OUT_V2_KEYS = {"id", "title", "body", "status", "author", "created_at", "updated_at", "excerpt"}


def walk(client, query: str = "", headers=None, between_pages=None) -> list[int]:
    """Follow next_cursor to the end; returns the ids seen, in order."""
    seen, cursor, pages = [], None, 0
    while True:
        page_query = f"{query}&{urlencode({'cursor': cursor})}" if cursor else query
        response = client.get(f"{V2}/posts?{page_query}", headers=headers or {})
        assert response.status_code == 200, response.content
        body = response.json()
        seen.extend(item["id"] for item in body["items"])
        cursor = body["next_cursor"]
        pages += 1
        assert pages < 1000, "the walk does not end"
        if cursor is None:
            return seen
        if between_pages:
            between_pages(pages)


def test_post_out_v2_shape(client, make_user, make_post):
    author = make_user(display_name="Alice A.")
    post = make_post(author, body="é" * 250)
    for response in (client.get(f"{V2}/posts/{post.pk}"), client.get(f"{V2}/posts")):
        assert response.status_code == 200
        item = response.json() if "items" not in response.json() else response.json()["items"][0]
        assert set(item) == POST_OUT_V2_KEYS
        assert item["excerpt"] == "é" * 200
        assert item["author"] == {"id": author.pk, "username": author.username, "display_name": "Alice A."}
        assert "Deprecation" not in response


def test_cursor_walk_sees_every_post_once_in_order_while_posts_are_added(client, make_user):
    author = make_user()
    start = timezone.now() - timedelta(days=1)
    # Three posts per timestamp: the id must break ties for the order (and the cursor) to be total.
    initial = Post.objects.bulk_create(
        Post(author=author, title=f"p{n}", status=PostStatus.PUBLISHED, created_at=start - timedelta(seconds=n // 3))
        for n in range(1000)
    )
    expected = [p.pk for p in sorted(initial, key=lambda p: (p.created_at, p.pk), reverse=True)]
    inserted = []

    def insert(page: int) -> None:
        # A new post, one back-dated into the part not yet walked, one into the part already walked.
        for created_at in (timezone.now(), start - timedelta(seconds=300 - page), start - timedelta(seconds=330)):
            inserted.append(Post.objects.create(author=author, title="new", status="published", created_at=created_at))

    seen = walk(client, "limit=37", between_pages=insert)

    assert len(inserted) > 50
    assert len(seen) == len(set(seen)), "a post was seen twice"
    assert [pk for pk in seen if pk in set(expected)] == expected
    created = dict(Post.objects.values_list("pk", "created_at"))
    assert seen == sorted(seen, key=lambda pk: (created[pk], pk), reverse=True)


@pytest.mark.parametrize("viewer", ["author", "staff"])
def test_cursor_walk_with_drafts_for_those_who_see_them(client, make_user, make_posts, bearer, viewer):
    author, other = make_user(), make_user()
    newest = timezone.now()
    mine = make_posts(author, 30, status=PostStatus.DRAFT, newest=newest)
    theirs = make_posts(other, 30, newest=newest - timedelta(milliseconds=500))
    hidden = make_posts(other, 5, status=PostStatus.DRAFT, newest=newest - timedelta(milliseconds=250))
    headers = bearer(author if viewer == "author" else make_user(is_staff=True))
    visible = mine + theirs + (hidden if viewer == "staff" else [])
    expected = [p.pk for p in sorted(visible, key=lambda p: (p.created_at, p.pk), reverse=True)]
    assert walk(client, "limit=7", headers) == expected
    assert walk(client, f"limit=7&author={other.pk}&status=published", headers) == [p.pk for p in theirs]


def test_filters_apply_to_every_page(client, make_user, make_posts):
    alice, bob = make_user(), make_user()
    make_posts(alice, 12)
    bobs = make_posts(bob, 12)
    assert walk(client, f"limit=5&author={bob.pk}") == [p.pk for p in bobs]
    assert walk(client, "limit=5&status=draft") == []
    assert walk(client, "limit=100&search=post%2011") == [
        p.pk for p in sorted(Post.objects.filter(title="Post 11"), key=lambda p: (p.created_at, p.pk), reverse=True)
    ]


def test_last_page_has_no_cursor(client, make_user, make_posts):
    make_posts(make_user(), 4)
    body = client.get(f"{V2}/posts?limit=4").json()
    assert len(body["items"]) == 4
    assert body["next_cursor"] is None
    assert client.get(f"{V2}/posts").json() == {"items": body["items"], "next_cursor": None}


def forged_cursors() -> list[str]:
    genuine = signing.Signer(salt="posts.cursor").sign_object([1_700_000_000_000_000, 5])
    value, signature = genuine.rsplit(":", 1)
    return [
        "garbage",
        "",
        ":",
        genuine + "x",
        value + ":" + signature[::-1],
        signing.Signer(salt="posts.cursor", key="another key").sign_object([1, 5]),  # signed by someone else
        signing.Signer(salt="other.salt").sign_object([1, 5]),
        "%00",
        "é" * 100,
    ]


@pytest.mark.parametrize("cursor", forged_cursors())
def test_a_malformed_or_forged_cursor_is_422(client, cursor):
    response = client.get(f"{V2}/posts", {"cursor": cursor})
    if cursor == "":
        # An empty cursor is no cursor: the first page.
        assert response.status_code == 200
        return
    assert response.status_code == 422
    assert response.json() == {
        "detail": [{"loc": ["query", "cursor"], "msg": "Invalid cursor.", "type": "invalid_cursor"}],
        "code": "validation_error",
    }


def test_a_signed_cursor_with_odd_content_is_422_not_500(client):
    signer = signing.Signer(salt="posts.cursor")
    for content in (["a", "b"], [10**30, 1], [1, 2**63], [1, 0], {"x": 1}, [1], None, [1.5, "2"], [True, 1]):
        response = client.get(f"{V2}/posts", {"cursor": signer.sign_object(content)})
        assert response.status_code == 422, (content, response.content)


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=101", "limit=-1", "limit=x", "cursor=" + "c" * 513, "author=0", "status=gone"]
)
def test_out_of_bounds_parameters_are_422(client, query):
    response = client.get(f"{V2}/posts?{query}")
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
