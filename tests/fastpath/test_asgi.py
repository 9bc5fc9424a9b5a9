"""The hot path of API requests (fastpath/asgi.py, fastpath/db.py, core/cache.py), in a real server process: the same
headers and security as Django's own middleware path, reads on the event loop, and no connection kept by a request
thread after a write."""

import re
import threading
import uuid

import pytest
import requests
from asgiref.testing import ApplicationCommunicator
from django.core import signals

from fastpath import asgi as fastpath
from fastpath.asgi import ASGIHandler
from posts.models import Post, PostStatus
from tests.conftest import DEFAULT_PASSWORD, child_process_env
from tests.helpers import ServerProcess

SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@pytest.fixture
def small_pool_server(transactional_db, tmp_path):
    """A server whose pools hold two connections each: a request thread that kept one would starve the others."""
    env = child_process_env(DB_POOL_MIN="1", DB_POOL_MAX="2", DB_POOL_TIMEOUT="3", RATE_LIMIT_WRITE_BURST="100")
    server = ServerProcess(env, tmp_path / "server.log")
    yield server
    server.stop()


def test_api_reads_carry_every_header_of_the_full_middleware_path(live_server_process, make_user, make_post):
    author = make_user(display_name="Ada")
    post = make_post(author, status=PostStatus.PUBLISHED)
    base = live_server_process.base_url
    for path in (f"/api/v1/posts/{post.pk}", f"/api/v2/users/{author.pk}", "/api/v1/posts/?page=1", "/api/v2/posts"):
        response = requests.get(base + path, headers={"X-Request-ID": "trace-me.1"}, timeout=10)
        assert response.status_code == 200, path
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value, (path, name)
        assert response.headers["X-Request-ID"] == "trace-me.1"
        assert all(name in response.headers for name in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"))
    detail = requests.get(f"{base}/api/v1/posts/{post.pk}", timeout=10)
    assert detail.json()["author"] == {"id": author.pk, "username": author.username}
    assert detail.headers["Deprecation"] == "true"
    assert detail.headers["Link"] == f'</api/v2/posts/{post.pk}>; rel="successor-version"'
    assert requests.get(base + "/api/v2/posts", timeout=10).json()["items"][0]["author"]["display_name"] == "Ada"
    user = requests.get(f"{base}/api/v2/users/{author.pk}", timeout=10).json()
    assert user["username"] == author.username and user["date_joined"].endswith("Z")
    missing = requests.get(f"{base}/api/v2/users/{author.pk + 1000}", timeout=10)
    assert (missing.status_code, missing.json()) == (404, {"detail": "No such user.", "code": "not_found"})


def test_session_writes_to_the_chat_api_still_need_the_csrf_token(live_server_process, make_user):
    make_user(username="carol")
    base = live_server_process.base_url
    browser = requests.Session()
    login_page = browser.get(f"{base}/accounts/login/", timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page.text).group(1)
    logged_in = browser.post(
        f"{base}/accounts/login/",
        data={"username": "carol", "password": DEFAULT_PASSWORD, "csrfmiddlewaretoken": token},
        headers={"Referer": f"{base}/accounts/login/"},
        allow_redirects=False,
        timeout=10,
    )
    assert logged_in.status_code == 302 and "sessionid" in browser.cookies

    assert browser.get(f"{base}/api/v2/chat/rooms", timeout=10).status_code == 200
    refused = browser.post(f"{base}/api/v2/chat/rooms", json={"name": "No token"}, timeout=10)
    assert refused.status_code == 403
    assert refused.headers["X-Frame-Options"] == "DENY"
    created = browser.post(
        f"{base}/api/v2/chat/rooms",
        json={"name": "With token"},
        headers={"X-CSRFToken": browser.cookies["csrftoken"]},
        timeout=10,
    )
    assert created.status_code == 201
    assert created.json()["slug"] == "with-token"


def test_a_write_leaves_no_connection_with_its_request_thread(small_pool_server, make_user, bearer):
    headers = bearer(make_user())
    base = small_pool_server.base_url
    statuses = []

    def write(index: int) -> None:
        response = requests.post(f"{base}/api/v1/posts/", json={"title": f"Post {index}"}, headers=headers, timeout=20)
        statuses.append(response.status_code)

    # More concurrent writes than pooled connections, twice: each must hand its connection back.
    for wave in range(2):
        threads = [threading.Thread(target=write, args=(wave * 10 + index,)) for index in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert statuses == [201] * 20
    assert Post.objects.count() == 20
    listed = requests.get(f"{base}/api/v1/posts/?page=1&per_page=1", headers=headers, timeout=10)
    assert listed.json()["pagination"]["total"] == 20


@pytest.fixture
def make_post(db):
    def make(author, **fields):
        fields.setdefault("title", f"Post {uuid.uuid4().hex[:8]}")
        fields.setdefault("status", PostStatus.PUBLISHED)
        return Post.objects.create(author=author, **fields)

    return make


# --- the request signals ---------------------------------------------------------------------------------


async def call_handler(path: str) -> int:
    """One request through the server's ASGI handler, in process; the response's status."""
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"x-forwarded-proto", b"https")],
        "server": ("testserver", 443),
    }
    communicator = ApplicationCommunicator(ASGIHandler(), scope)
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(5)
    await communicator.receive_output(5)
    await communicator.wait(5)
    return start["status"]


async def test_a_receiver_of_the_request_signals_beyond_django_s_own_is_still_called():
    assert fastpath._only_known_receivers()
    calls = []

    def started(**kwargs):
        calls.append("started")

    def finished(**kwargs):
        calls.append("finished")

    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    try:
        # The answer is remembered, and asked again as soon as the receivers change.
        assert not fastpath._only_known_receivers()
        assert await call_handler("/api/v1/no-such-operation") == 404
        assert calls == ["started", "finished"]
    finally:
        signals.request_started.disconnect(started)
        signals.request_finished.disconnect(finished)
    assert fastpath._only_known_receivers()
    calls.clear()
    assert await call_handler("/api/v1/no-such-operation") == 404
    assert calls == []
