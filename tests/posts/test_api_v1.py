"""The v1 Posts contract, endpoint by endpoint: success paths, input bounds, errors, and who may see or change what.

Writes commit for real (transaction=True), as in production, so the cache is updated the way clients rely on."""

from datetime import datetime

import pytest

from posts.models import Post, PostStatus

pytestmark = pytest.mark.django_db(transaction=True)

V1 = "/api/v1"
POST_OUT_KEYS = {"id", "title", "body", "status", "author", "created_at", "updated_at"}


def create(client, body, headers):
    return client.post(f"{V1}/posts/", body, content_type="application/json", headers=headers)


def patch(client, post_id, body, headers=None):
    return client.patch(f"{V1}/posts/{post_id}", body, content_type="application/json", headers=headers or {})


def ids(response) -> list[int]:
    return [item["id"] for item in response.json()["items"]]


# --- create ---------------------------------------------------------------------------------------------


def test_create_answers_201_with_location_and_a_draft_by_default(client, make_user, bearer):
    author = make_user(display_name="Alice A.")
    response = create(client, {"title": "  Hello  ", "body": "World"}, bearer(author))
    assert response.status_code == 201
    body = response.json()
    assert set(body) == POST_OUT_KEYS
    assert body["title"] == "Hello"  # surrounding whitespace is not part of a title
    assert body["status"] == "draft"
    assert body["author"] == {"id": author.pk, "username": author.username}
    assert body["created_at"].endswith("Z") and body["updated_at"].endswith("Z")
    assert response["Location"] == f"{V1}/posts/{body['id']}"
    assert client.get(response["Location"], headers=bearer(author)).json() == body


def test_create_published(client, make_user, bearer):
    response = create(client, {"title": "Out", "body": "", "status": "published"}, bearer(make_user()))
    assert response.status_code == 201
    assert response.json()["status"] == "published"
    assert client.get(response["Location"]).status_code == 200


def test_create_needs_a_bearer_token(client):
    response = create(client, {"title": "Hello"}, {})
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert response.json()["code"] == "not_authenticated"


def test_title_and_body_accept_their_maximum_lengths(client, make_user, bearer):
    response = create(client, {"title": "t" * 200, "body": "b" * 100_000}, bearer(make_user()))
    assert response.status_code == 201
    assert len(response.json()["body"]) == 100_000


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "title"),
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "t" * 201}, "title"),
        ({"title": None}, "title"),
        ({"title": 42}, "title"),
        ({"title": ["a"]}, "title"),
        ({"title": "nul\x00byte"}, "title"),
        ({"title": "ok", "body": "b" * 100_001}, "body"),
        ({"title": "ok", "body": "nul\x00byte"}, "body"),
        ({"title": "ok", "body": None}, "body"),
        ({"title": "ok", "status": "archived"}, "status"),
        ({"title": "ok", "author": 1}, "author"),
    ],
)
def test_create_refuses_invalid_input_with_422(client, make_user, bearer, payload, field):
    response = create(client, payload, bearer(make_user()))
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_error"
    assert field in body["detail"][0]["loc"]
    assert Post.objects.count() == 0


def test_create_refuses_malformed_json_and_oversized_bodies(client, make_user, bearer):
    headers = bearer(make_user())
    malformed = client.post(f"{V1}/posts/", b'{"title": ', content_type="application/json", headers=headers)
    assert malformed.status_code == 400
    assert malformed.json()["code"] == "invalid_json"
    not_an_object = create(client, ["a", "list"], headers)
    assert not_an_object.status_code in (400, 422)
    huge = client.post(
        f"{V1}/posts/",
        b'{"title": "x", "body": "' + b"b" * 1_100_000 + b'"}',
        content_type="application/json",
        headers=headers,
    )
    assert huge.status_code == 413
    assert huge.json()["code"] == "payload_too_large"


# --- list -----------------------------------------------------------------------------------------------


def test_list_is_newest_first_with_pagination(client, make_user, make_posts):
    posts = make_posts(make_user(), 5)
    first = client.get(f"{V1}/posts/?per_page=2")
    assert first.status_code == 200
    assert ids(first) == [p.pk for p in posts[:2]]
    assert first.json()["pagination"] == {"page": 1, "per_page": 2, "total": 5, "pages": 3}
    assert set(first.json()["items"][0]) == POST_OUT_KEYS
    last = client.get(f"{V1}/posts/?per_page=2&page=3")
    assert ids(last) == [posts[4].pk]
    beyond = client.get(f"{V1}/posts/?per_page=2&page=1000000")
    assert beyond.status_code == 200
    assert beyond.json()["items"] == []
    assert beyond.json()["pagination"]["total"] == 5


def test_list_defaults_to_20_per_page(client, make_user, make_posts):
    make_posts(make_user(), 25)
    response = client.get(f"{V1}/posts/")
    assert len(response.json()["items"]) == 20
    assert response.json()["pagination"] == {"page": 1, "per_page": 20, "total": 25, "pages": 2}


def test_list_filters_by_author_status_and_search(client, make_user, make_post, bearer):
    alice, bob, staff = make_user(), make_user(), make_user(is_staff=True)
    a1 = make_post(alice, title="Postgres tuning", body="vacuum and indexes")
    a2 = make_post(alice, title="Redis", body="Sorted sets for rate LIMITS", status=PostStatus.DRAFT)
    b1 = make_post(bob, title="Cooking", body="pasta")

    def listed(query, headers=None):
        return set(ids(client.get(f"{V1}/posts/?{query}", headers=headers or {})))

    assert listed(f"author={alice.pk}") == {a1.pk}
    assert listed(f"author={alice.pk}", bearer(alice)) == {a1.pk, a2.pk}
    assert listed("status=draft") == set()
    assert listed("status=draft", bearer(bob)) == set()
    assert listed("status=draft", bearer(alice)) == {a2.pk}
    assert listed("status=draft", bearer(staff)) == {a2.pk}
    assert listed("status=published", bearer(staff)) == {a1.pk, b1.pk}
    assert listed("search=POSTGRES") == {a1.pk}  # case-insensitive, in the title
    assert listed("search=pasta") == {b1.pk}  # or in the body
    assert listed("search=rate%20limits") == set()  # alice's draft, not listed to others
    assert listed("search=rate%20limits", bearer(alice)) == {a2.pk}
    assert listed("search=100%25_") == set()  # LIKE wildcards are matched literally
    assert listed(f"author={bob.pk}&search=postgres") == set()
    assert listed("search=%20%20") == {a1.pk, b1.pk}  # blank search: no filter


@pytest.mark.parametrize(
    "query",
    [
        "per_page=0",
        "per_page=101",
        "per_page=-1",
        "per_page=abc",
        "page=0",
        "page=-5",
        "page=99999999999999999999",
        "author=0",
        "author=-1",
        "author=9223372036854775808",
        "author=abc",
        "status=archived",
        "search=" + "s" * 201,
        "search=%00",
    ],
)
def test_list_refuses_out_of_bounds_parameters_with_422(client, query):
    response = client.get(f"{V1}/posts/?{query}")
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


def test_list_accepts_the_bounds(client, make_user, make_posts):
    make_posts(make_user(), 3)
    assert client.get(f"{V1}/posts/?per_page=1").status_code == 200
    assert client.get(f"{V1}/posts/?per_page=100").status_code == 200
    assert client.get(f"{V1}/posts/?author=9223372036854775807").json()["items"] == []
    assert client.get(f"{V1}/posts/?search=%F0%9F%98%80%ED%A0%80").status_code == 200  # odd but decodable


# --- detail ---------------------------------------------------------------------------------------------


def test_detail(client, make_post):
    post = make_post(title="Hi", body="There")
    response = client.get(f"{V1}/posts/{post.pk}")
    assert response.status_code == 200
    assert response.json()["title"] == "Hi"
    assert response.json()["author"]["username"] == post.author.username


@pytest.mark.parametrize(
    ("post_id", "status"),
    [
        ("999999", 404),
        ("9223372036854775807", 404),
        ("9223372036854775808", 422),
        ("0", 422),
        ("-1", 422),
        ("abc", 422),
        ("1.5", 422),
    ],
)
def test_detail_of_odd_ids(client, post_id, status):
    response = client.get(f"{V1}/posts/{post_id}")
    assert response.status_code == status
    assert response.json()["code"] == ("not_found" if status == 404 else "validation_error")


# --- visibility and permissions -------------------------------------------------------------------------

VIEWERS = ["anonymous", "author", "other", "staff"]


@pytest.fixture
def world(make_user, make_post, bearer):
    """One author with a draft and a published post, and a header for each kind of viewer."""
    author = make_user()
    headers = {
        "anonymous": {},
        "author": bearer(author),
        "other": bearer(make_user()),
        "staff": bearer(make_user(is_staff=True)),
    }
    draft = make_post(author, title="Draft", status=PostStatus.DRAFT)
    published = make_post(author, title="Published")
    return {"author": author, "headers": headers, "draft": draft, "published": published}


@pytest.mark.parametrize(
    ("viewer", "sees_draft"), [("anonymous", False), ("author", True), ("other", False), ("staff", True)]
)
def test_who_sees_a_draft(client, world, viewer, sees_draft):
    headers = world["headers"][viewer]
    draft, published = world["draft"], world["published"]
    expected = {draft.pk, published.pk} if sees_draft else {published.pk}
    assert set(ids(client.get(f"{V1}/posts/", headers=headers))) == expected
    by_author = client.get(f"{V1}/authors/{world['author'].pk}/posts", headers=headers)
    assert set(ids(by_author)) == expected
    assert by_author.json()["pagination"]["total"] == len(expected)
    assert client.get(f"{V1}/posts/{draft.pk}", headers=headers).status_code == (200 if sees_draft else 404)
    assert client.get(f"/api/v2/posts/{draft.pk}", headers=headers).status_code == (200 if sees_draft else 404)
    assert client.get(f"{V1}/posts/{published.pk}", headers=headers).status_code == 200


# (viewer, post) -> status of PATCH and DELETE: 404 for what they cannot see, 403 for what they see but do not own.
CHANGE_MATRIX = {
    ("anonymous", "draft"): 401,
    ("anonymous", "published"): 401,
    ("author", "draft"): None,
    ("author", "published"): None,
    ("other", "draft"): 404,
    ("other", "published"): 403,
    ("staff", "draft"): None,
    ("staff", "published"): None,
}


@pytest.mark.parametrize(("viewer", "which"), list(CHANGE_MATRIX))
def test_who_may_patch(client, world, viewer, which):
    post = world[which]
    response = patch(client, post.pk, {"title": "Changed"}, world["headers"][viewer])
    expected = CHANGE_MATRIX[(viewer, which)] or 200
    assert response.status_code == expected
    post.refresh_from_db()
    assert post.title == ("Changed" if expected == 200 else which.title())
    if expected == 200:
        assert response.json()["title"] == "Changed"
        assert response.json()["author"]["id"] == world["author"].pk  # staff edits do not take the post over


@pytest.mark.parametrize(("viewer", "which"), list(CHANGE_MATRIX))
def test_who_may_delete(client, world, viewer, which):
    post = world[which]
    response = client.delete(f"{V1}/posts/{post.pk}", headers=world["headers"][viewer])
    expected = CHANGE_MATRIX[(viewer, which)] or 204
    assert response.status_code == expected
    assert Post.objects.filter(pk=post.pk).exists() == (expected != 204)
    if expected == 204:
        assert response.content == b""
        assert client.get(f"{V1}/posts/{post.pk}", headers=world["headers"][viewer]).status_code == 404
        assert client.delete(f"{V1}/posts/{post.pk}", headers=world["headers"][viewer]).status_code == 404


def test_patch_changes_only_the_given_fields(client, make_user, make_post, bearer):
    author = make_user()
    post = make_post(author, title="Title", body="Body", status=PostStatus.DRAFT)
    response = patch(client, post.pk, {"status": "published"}, bearer(author))
    assert response.status_code == 200
    assert (response.json()["title"], response.json()["body"], response.json()["status"]) == (
        "Title",
        "Body",
        "published",
    )
    assert datetime.fromisoformat(response.json()["updated_at"]) > datetime.fromisoformat(
        response.json()["created_at"]
    )
    unchanged = patch(client, post.pk, {}, bearer(author))
    assert unchanged.status_code == 200
    assert unchanged.json()["updated_at"] == response.json()["updated_at"]
    assert patch(client, post.pk, {"body": ""}, bearer(author)).json()["body"] == ""


@pytest.mark.parametrize(
    "payload",
    [
        {"title": None},
        {"body": None},
        {"status": None},
        {"title": ""},
        {"title": "t" * 201},
        {"body": "b" * 100_001},
        {"status": "archived"},
        {"author": 5},
        {"created_at": "2020-01-01T00:00:00Z"},
    ],
)
def test_patch_refuses_invalid_input(client, make_user, make_post, bearer, payload):
    author = make_user()
    post = make_post(author, title="Title")
    response = patch(client, post.pk, payload, bearer(author))
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    post.refresh_from_db()
    assert post.title == "Title"


def test_patch_and_delete_of_a_missing_post_are_404(client, make_user, bearer):
    headers = bearer(make_user(is_staff=True))
    assert patch(client, 424242, {"title": "x"}, headers).status_code == 404
    assert client.delete(f"{V1}/posts/424242", headers=headers).status_code == 404
    assert client.delete(f"{V1}/posts/9223372036854775808", headers=headers).status_code == 422


# --- an author's posts ----------------------------------------------------------------------------------


def test_author_posts(client, make_user, make_posts):
    author = make_user(display_name="The Author")
    posts = make_posts(author, 3)
    make_posts(make_user(), 2)
    response = client.get(f"{V1}/authors/{author.pk}/posts?per_page=2")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"author", "items", "pagination"}
    assert body["author"] == {
        "id": author.pk,
        "username": author.username,
        "display_name": "The Author",
        "date_joined": body["author"]["date_joined"],
    }
    assert ids(response) == [p.pk for p in posts[:2]]
    assert body["pagination"] == {"page": 1, "per_page": 2, "total": 3, "pages": 2}
    assert response["Link"] == f'</api/v2/authors/{author.pk}/posts>; rel="successor-version"'
    assert response["Deprecation"] == "true"


def test_author_posts_of_a_missing_or_inactive_author_are_404(client, make_user):
    inactive = make_user(is_active=False)
    assert client.get(f"{V1}/authors/{inactive.pk}/posts").status_code == 404
    assert client.get(f"{V1}/authors/987654/posts").status_code == 404
    assert client.get(f"{V1}/authors/0/posts").status_code == 422
    assert client.get(f"{V1}/authors/{inactive.pk}/posts?per_page=101").status_code == 422


# --- version headers ------------------------------------------------------------------------------------


def test_v1_responses_announce_their_successor(client, make_user, make_post, bearer):
    author = make_user()
    post = make_post(author)
    listing = client.get(f"{V1}/posts/")
    assert listing["Deprecation"] == "true"
    assert listing["Sunset"].endswith("GMT")
    # v2 spells it without the trailing slash.
    assert listing["Link"] == '</api/v2/posts>; rel="successor-version"'
    assert client.get(f"{V1}/posts/{post.pk}")["Link"] == f'</api/v2/posts/{post.pk}>; rel="successor-version"'
    deleted = client.delete(f"{V1}/posts/{post.pk}", headers=bearer(author))
    assert deleted.status_code == 204
    assert deleted["Deprecation"] == "true"  # a bodiless answer is still a v1 answer
    assert "Deprecation" not in client.get("/api/v2/posts")
