"""v2 is the complete current version: every v1 operation has a v2 equivalent in v2's shapes (cursor pages,
PostOutV2), each path has one spelling (the other answers 308), and v1 names the successor of each operation.

The domain rules behind these operations (visibility, idempotency, the SSRF guard, ...) are tested through v1 in
each app's tests: both versions call the same services and selectors."""

from urllib.parse import urlencode

import pytest
from django.core import signing

from jobs import services as exports
from jobs.models import Job
from posts.models import PostStatus
from webhooks.models import WebhookDelivery, WebhookEndpoint

pytestmark = pytest.mark.django_db(transaction=True)

V1, V2 = "/api/v1", "/api/v2"
PUBLIC_URL = "https://93.184.215.14/hooks/blog"
POST_OUT_V2_KEYS = {"id", "title", "body", "status", "author", "created_at", "updated_at", "excerpt"}


def json_post(client, path, body, headers=None):
    return client.post(path, body, content_type="application/json", headers=headers or {})


def walk(client, path: str, headers=None, **query) -> list[dict]:
    """Every item of a cursor list, following next_cursor to the end."""
    items, cursor = [], None
    for _ in range(100):
        response = client.get(
            f"{path}?{urlencode({**query, **({'cursor': cursor} if cursor else {})})}", headers=headers
        )
        assert response.status_code == 200, response.content
        body = response.json()
        assert set(body) >= {"items", "next_cursor"}
        items.extend(body["items"])
        if (cursor := body["next_cursor"]) is None:
            return items
    raise AssertionError("the walk does not end")


# --- the whole of v1, in v2 ------------------------------------------------------------------------------


def operations(client, version: str) -> set[tuple[str, str]]:
    paths = client.get(f"{version}/openapi.json").json()["paths"]
    return {(path.removeprefix(version), method) for path, methods in paths.items() for method in methods}


def test_every_v1_operation_has_a_v2_equivalent(client):
    v1 = {(path.rstrip("/"), method) for path, method in operations(client, V1)}
    v2 = operations(client, V2)
    assert v1 <= v2, sorted(v1 - v2)
    assert ("/jobs", "get") in v2  # new in v2: the list of one's jobs


def test_v2_paths_have_one_spelling_without_a_trailing_slash(client):
    assert [path for path, _ in operations(client, V2) if path.endswith("/")] == []


@pytest.mark.parametrize(
    ("method", "path", "successor"),
    [
        ("get", "/api/v1/posts/", "/api/v2/posts"),
        ("post", "/api/v1/posts/", "/api/v2/posts"),
        ("get", "/api/v1/users/", "/api/v2/users"),
        ("post", "/api/v1/exports", "/api/v2/exports"),
        ("get", "/api/v1/jobs/7", "/api/v2/jobs/7"),
        ("get", "/api/v1/webhooks/3/deliveries", "/api/v2/webhooks/3/deliveries"),
        ("get", "/api/v1/authors/5/posts", "/api/v2/authors/5/posts"),
    ],
)
def test_v1_names_the_v2_successor_of_each_operation(client, method, path, successor):
    response = getattr(client, method)(path)
    assert response["Link"] == f'<{successor}>; rel="successor-version"'


@pytest.mark.parametrize("method", ["get", "post", "patch", "delete"])
def test_the_other_spelling_answers_308_keeping_method_and_query(client, method):
    response = getattr(client, method)(f"{V2}/posts/?limit=2&q=a%20b")
    assert response.status_code == 308
    assert response["Location"] == f"{V2}/posts?limit=2&q=a%20b"
    assert client.get(f"{V2}/users/me/")["Location"] == f"{V2}/users/me"
    assert client.get(f"{V2}/posts/12/")["Location"] == f"{V2}/posts/12"


def test_a_308_location_is_percent_encoded_whatever_the_request_held(client):
    response = client.get(f"{V2}/posts/?x=%0A%00&y=\u00e9")
    assert response.status_code == 308
    assert response["Location"] == f"{V2}/posts?x=%0A%00&y=%C3%A9"


def test_a_post_through_the_redirect_creates_once(client, make_user, bearer):
    headers = bearer(make_user())
    redirected = json_post(client, f"{V2}/posts/", {"title": "Once"}, headers)
    assert redirected.status_code == 308
    created = json_post(client, redirected["Location"], {"title": "Once"}, headers)
    assert created.status_code == 201
    assert [item["title"] for item in walk(client, f"{V2}/posts", headers, author=created.json()["author"]["id"])] == [
        "Once"
    ]


# --- posts -----------------------------------------------------------------------------------------------


def test_v2_writes_posts_in_v2s_shape(client, make_user, bearer):
    author = make_user(display_name="Ada L.")
    headers = bearer(author)
    created = json_post(client, f"{V2}/posts", {"title": "Hello", "body": "x" * 300, "status": "published"}, headers)
    assert created.status_code == 201, created.content
    post = created.json()
    assert set(post) == POST_OUT_V2_KEYS
    assert post["excerpt"] == "x" * 200
    assert post["author"] == {"id": author.pk, "username": author.username, "display_name": "Ada L."}
    assert created["Location"] == f"{V2}/posts/{post['id']}"

    changed = client.patch(
        f"{V2}/posts/{post['id']}", {"body": "short"}, content_type="application/json", headers=headers
    )
    assert changed.status_code == 200
    assert changed.json()["excerpt"] == "short"

    assert client.delete(f"{V2}/posts/{post['id']}", headers=bearer(make_user())).status_code == 403
    assert client.delete(f"{V2}/posts/{post['id']}", headers=headers).status_code == 204
    assert client.get(f"{V2}/posts/{post['id']}").status_code == 404


def test_v2_writes_need_a_token(client, make_post):
    post = make_post()
    response = json_post(client, f"{V2}/posts", {"title": "x"})
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert client.patch(f"{V2}/posts/{post.pk}", {}, content_type="application/json").status_code == 401
    assert client.delete(f"{V2}/posts/{post.pk}").status_code == 401


def test_an_authors_posts_by_cursor(client, make_user, make_post, bearer):
    author = make_user()
    published = [make_post(author, title=f"p{n}") for n in range(5)]
    draft = make_post(author, status=PostStatus.DRAFT)
    make_post(make_user())

    first = client.get(f"{V2}/authors/{author.pk}/posts", {"limit": 2}).json()
    assert first["author"]["id"] == author.pk
    assert set(first["items"][0]) == POST_OUT_V2_KEYS
    seen = walk(client, f"{V2}/authors/{author.pk}/posts", limit=2)
    assert [item["id"] for item in seen] == [post.pk for post in reversed(published)]
    own = walk(client, f"{V2}/authors/{author.pk}/posts", bearer(author), limit=2)
    assert draft.pk in [item["id"] for item in own]
    assert client.get(f"{V2}/authors/{author.pk + 1000}/posts").status_code == 404


# --- users -----------------------------------------------------------------------------------------------


def test_the_user_directory_by_cursor_lists_every_active_user_once(client, make_user, bearer):
    users = [make_user() for _ in range(5)]
    gone = make_user(is_active=False)
    ids = [item["id"] for item in walk(client, f"{V2}/users", bearer(users[0]), limit=2)]
    assert ids == sorted(ids)
    assert {user.pk for user in users} <= set(ids)
    assert gone.pk not in ids
    assert client.get(f"{V2}/users").status_code == 401


# --- exports and jobs ------------------------------------------------------------------------------------


def test_an_export_through_v2_names_v2_urls(client, make_user, bearer, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    headers = bearer(make_user())
    response = json_post(client, f"{V2}/exports", {"format": "jsonl"}, headers)
    assert response.status_code == 202, response.content
    job = response.json()
    assert response["Location"] == f"{V2}/jobs/{job['id']}"
    assert job["status"] == "queued" and job["download_url"] is None
    exports.export_run(job_id=job["id"])  # what the worker's task runs
    job = client.get(f"{V2}/jobs/{job['id']}", headers=headers).json()
    assert job["status"] == "succeeded"
    assert job["download_url"] == f"{V2}/jobs/{job['id']}/download"
    assert client.get(job["download_url"], headers=headers).status_code == 200
    # v1 keeps its own URLs for the same job.
    assert client.get(f"{V1}/jobs/{job['id']}", headers=headers).json()["download_url"].startswith(f"{V1}/")


def test_the_list_of_ones_jobs_is_newest_first_by_cursor(client, make_user, bearer, make_job):
    owner = make_user()
    jobs = [make_job(owner) for _ in range(5)]
    failed = make_job(owner, status=Job.Status.FAILED)
    others = make_job(make_user())
    headers = bearer(owner)

    listed = walk(client, f"{V2}/jobs", headers, limit=2)
    assert [job["id"] for job in listed] == [failed.pk, *(job.pk for job in reversed(jobs))]
    assert others.pk not in [job["id"] for job in listed]
    assert [job["id"] for job in walk(client, f"{V2}/jobs", headers, status="failed")] == [failed.pk]
    assert client.get(f"{V2}/jobs", {"status": "lost"}, headers=headers).status_code == 422
    assert client.get(f"{V2}/jobs").status_code == 401


def test_a_cursor_of_one_list_is_refused_by_another(client, make_user, bearer, make_job, make_post):
    owner = make_user()
    for _ in range(3):
        make_job(owner)
        make_post(owner)
    headers = bearer(owner)
    jobs_cursor = client.get(f"{V2}/jobs", {"limit": 1}, headers=headers).json()["next_cursor"]
    posts_cursor = client.get(f"{V2}/posts", {"limit": 1}).json()["next_cursor"]
    assert client.get(f"{V2}/posts", {"cursor": jobs_cursor}).status_code == 422
    response = client.get(f"{V2}/jobs", {"cursor": posts_cursor}, headers=headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "cursor"]
    forged = signing.Signer(salt="jobs.cursor").sign_object(["x", 1])
    assert client.get(f"{V2}/jobs", {"cursor": forged}, headers=headers).status_code == 422


# --- webhooks --------------------------------------------------------------------------------------------


def test_webhooks_in_v2(client, make_user, bearer):
    owner = make_user()
    headers = bearer(owner)
    created = [json_post(client, f"{V2}/webhooks", {"url": f"{PUBLIC_URL}/{n}"}, headers) for n in range(3)]
    assert [response.status_code for response in created] == [201] * 3
    assert "secret" in created[0].json()
    assert created[0]["Location"] == f"{V2}/webhooks/{created[0].json()['id']}"
    json_post(client, f"{V2}/webhooks", {"url": PUBLIC_URL}, bearer(make_user()))

    listed = walk(client, f"{V2}/webhooks", headers, limit=2)
    assert [item["id"] for item in listed] == [response.json()["id"] for response in reversed(created)]
    assert all("secret" not in item for item in listed)

    endpoint = WebhookEndpoint.objects.get(pk=created[0].json()["id"])
    for n in range(3):
        WebhookDelivery.objects.create(endpoint=endpoint, event="post.published", event_id=f"e{n}", payload={})
    deliveries = walk(client, f"{V2}/webhooks/{endpoint.pk}/deliveries", headers, limit=2)
    assert [item["event_id"] for item in deliveries] == ["e2", "e1", "e0"]
    assert client.get(f"{V2}/webhooks/{endpoint.pk}/deliveries", headers=bearer(make_user())).status_code == 404

    assert (
        client.patch(
            f"{V2}/webhooks/{endpoint.pk}", {"is_active": False}, content_type="application/json", headers=headers
        ).json()["is_active"]
        is False
    )
    assert client.delete(f"{V2}/webhooks/{endpoint.pk}", headers=headers).status_code == 204
