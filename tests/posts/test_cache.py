"""The posts cache as a client sees it: never a stale read after its own successful write, and conditional GETs.

Writes commit for real (transaction=True): the cache is updated when a transaction commits, as in production."""

import pytest

from posts.models import PostStatus

pytestmark = pytest.mark.django_db(transaction=True)

CLOSED_REDIS_PORT_URL = "redis://127.0.0.1:1/0"


def patch(client, post_id, body, headers):
    return client.patch(f"/api/v1/posts/{post_id}", body, content_type="application/json", headers=headers)


def titles(response) -> list[str]:
    return [item["title"] for item in response.json()["items"]]


def test_read_update_read_gives_the_new_value(client, make_user, make_post, bearer):
    author = make_user()
    headers = bearer(author)
    post = make_post(author, title="Before")
    paths = [f"/api/v1/posts/{post.pk}", f"/api/v2/posts/{post.pk}"]
    lists = ["/api/v1/posts/", "/api/v2/posts", f"/api/v1/authors/{author.pk}/posts"]
    for path in paths + lists:
        assert "Before" in client.get(path).content.decode()
    assert patch(client, post.pk, {"title": "After"}, headers).status_code == 200
    for path in paths:
        assert client.get(path).json()["title"] == "After"
    for path in lists:
        assert titles(client.get(path)) == ["After"]


def test_new_posts_and_unpublished_posts_show_at_once_in_cached_lists(client, make_user, bearer):
    author = make_user()
    headers = bearer(author)
    assert client.get("/api/v1/posts/").json()["pagination"]["total"] == 0
    created = client.post(
        "/api/v1/posts/", {"title": "Fresh", "status": "published"}, content_type="application/json", headers=headers
    )
    assert titles(client.get("/api/v1/posts/")) == ["Fresh"]
    assert client.get("/api/v1/posts/").json()["pagination"]["total"] == 1
    assert titles(client.get("/api/v2/posts")) == ["Fresh"]
    post_id = created.json()["id"]
    assert patch(client, post_id, {"status": "draft"}, headers).status_code == 200
    assert titles(client.get("/api/v1/posts/")) == []
    assert client.get(f"/api/v1/posts/{post_id}").status_code == 404


def test_deleted_posts_disappear_at_once(client, make_user, make_post, bearer):
    author = make_user()
    post = make_post(author, title="Doomed")
    assert client.get(f"/api/v1/posts/{post.pk}").status_code == 200
    assert titles(client.get("/api/v2/posts")) == ["Doomed"]
    assert client.delete(f"/api/v1/posts/{post.pk}", headers=bearer(author)).status_code == 204
    assert client.get(f"/api/v1/posts/{post.pk}").status_code == 404
    assert client.get(f"/api/v2/posts/{post.pk}").status_code == 404
    assert titles(client.get("/api/v2/posts")) == []


def test_an_authors_new_display_name_shows_on_their_posts(client, make_user, make_post, bearer):
    author = make_user(display_name="Old Name")
    post = make_post(author)
    assert client.get(f"/api/v2/posts/{post.pk}").json()["author"]["display_name"] == "Old Name"
    assert client.get("/api/v2/posts").json()["items"][0]["author"]["display_name"] == "Old Name"
    changed = client.patch(
        "/api/v1/users/me", {"display_name": "New Name"}, content_type="application/json", headers=bearer(author)
    )
    assert changed.status_code == 200
    assert client.get(f"/api/v2/posts/{post.pk}").json()["author"]["display_name"] == "New Name"
    assert client.get("/api/v2/posts").json()["items"][0]["author"]["display_name"] == "New Name"


def test_a_draft_in_the_cache_is_still_only_for_its_author(client, make_user, make_post, bearer):
    author = make_user()
    draft = make_post(author, status=PostStatus.DRAFT)
    assert client.get(f"/api/v1/posts/{draft.pk}", headers=bearer(author)).status_code == 200  # now cached
    assert client.get(f"/api/v1/posts/{draft.pk}").status_code == 404
    assert client.get(f"/api/v1/posts/{draft.pk}", headers=bearer(make_user())).status_code == 404
    assert client.get(f"/api/v1/posts/{draft.pk}", headers=bearer(author))["Cache-Control"] == "private, no-cache"


# --- conditional GET ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_matching_etag_gives_304_and_a_change_gives_a_new_etag(client, make_user, make_post, bearer, version):
    author = make_user()
    post = make_post(author)
    path = f"/api/{version}/posts/{post.pk}"
    first = client.get(path)
    etag = first["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    assert first["Cache-Control"] == "no-cache"

    not_modified = client.get(path, headers={"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified["ETag"] == etag
    assert client.get(path, headers={"If-None-Match": f'"other", W/{etag}'}).status_code == 304
    assert client.get(path, headers={"If-None-Match": "*"}).status_code == 304
    assert client.get(path, headers={"If-None-Match": '"something-else"'}).status_code == 200

    patch(client, post.pk, {"body": "edited"}, bearer(author))
    changed = client.get(path, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.json()["body"] == "edited"
    assert changed["ETag"] != etag


def test_each_version_has_its_own_etag(client, make_post):
    post = make_post()
    v1, v2 = client.get(f"/api/v1/posts/{post.pk}"), client.get(f"/api/v2/posts/{post.pk}")
    assert v1["ETag"] != v2["ETag"]
    assert client.get(f"/api/v2/posts/{post.pk}", headers={"If-None-Match": v1["ETag"]}).status_code == 200
    not_modified = client.get(f"/api/v1/posts/{post.pk}", headers={"If-None-Match": v1["ETag"]})
    assert not_modified.status_code == 304
    assert not_modified["Deprecation"] == "true"


def test_no_304_for_what_the_caller_may_not_see(client, make_user, make_post, bearer):
    author = make_user()
    draft = make_post(author, status=PostStatus.DRAFT)
    etag = client.get(f"/api/v1/posts/{draft.pk}", headers=bearer(author))["ETag"]
    assert client.get(f"/api/v1/posts/{draft.pk}", headers={"If-None-Match": etag}).status_code == 404


# --- Redis unreachable ----------------------------------------------------------------------------------


@pytest.fixture
def cache_down(settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": CLOSED_REDIS_PORT_URL,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
        }
    }


def test_reads_and_writes_work_from_the_database_when_the_cache_is_down(client, cache_down, make_user, bearer):
    author = make_user()
    headers = bearer(author)
    created = client.post(
        "/api/v1/posts/", {"title": "Still", "status": "published"}, content_type="application/json", headers=headers
    )
    assert created.status_code == 201
    post_id = created.json()["id"]
    assert client.get(f"/api/v1/posts/{post_id}").json()["title"] == "Still"
    assert titles(client.get("/api/v1/posts/")) == ["Still"]
    assert titles(client.get("/api/v2/posts")) == ["Still"]
    assert patch(client, post_id, {"title": "Changed"}, headers).json()["title"] == "Changed"
    assert client.get(f"/api/v2/posts/{post_id}").json()["title"] == "Changed"
    assert client.delete(f"/api/v1/posts/{post_id}", headers=headers).status_code == 204
