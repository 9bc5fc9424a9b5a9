"""A PostgreSQL outage under load, against a real server process and a private cluster the test stops and starts:
every request answers (never a 500), with `503 database_unavailable` and Retry-After while the database is down,
at once once the outage is known, logged once rather than once per request; the service recovers by itself when
the database is back."""

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import DEFAULT_PASSWORD, child_process_env
from tests.helpers import UNLIMITED_RATE_LIMITS, ServerProcess, http_json, run_manage

CLIENTS = 8
# How long the database stays down, and the bounds the service must keep.
OUTAGE_SECONDS = 6
FAST_ANSWER_SECONDS = 1.0
RECOVERY_SECONDS = 10


@pytest.fixture(scope="module")
def service(private_postgres, tmp_path_factory):
    """A server process whose database is the private cluster, with a user, a token and a post to read."""
    env = child_process_env(DATABASE_URL=private_postgres.url(), RESPONSE_CACHE="false", **UNLIMITED_RATE_LIMITS)
    migrated = run_manage("migrate", "--noinput", env=env, timeout=300)
    assert migrated.returncode == 0, migrated.stderr
    server = ServerProcess(env, tmp_path_factory.mktemp("outage") / "server.log")
    api = f"{server.base_url}/api/v2"
    # A name of its own: the login guard's counters live in the shared Redis.
    credentials = {"username": f"outage-{uuid.uuid4().hex[:8]}", "password": DEFAULT_PASSWORD}
    status, _ = http_json(f"{api}/auth/register", method="POST", body={**credentials, "email": "o@example.com"})
    assert status == 201
    status, tokens = http_json(f"{api}/auth/token", method="POST", body=credentials)
    assert status == 200
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    status, post = http_json(f"{api}/posts", method="POST", body={"title": "t", "status": "published"}, headers=bearer)
    assert status == 201
    yield server, api, bearer, post["id"], credentials
    server.stop()


def _request(url: str, headers: dict, body: dict | None = None) -> dict:
    """One request: its status, error code, Retry-After and how long it took; a network failure is status 0."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={**headers, "Content-Type": "application/json"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, payload, retry_after = response.status, response.read(), None
    except urllib.error.HTTPError as error:
        status, payload, retry_after = error.code, error.read(), error.headers.get("Retry-After")
    except OSError:
        status, payload, retry_after = 0, b"", None
    code = json.loads(payload).get("code") if payload.startswith(b"{") else None
    return {"url": url, "status": status, "code": code, "retry_after": retry_after, "started": started,
            "seconds": time.monotonic() - started}  # fmt: skip


def test_requests_during_an_outage_answer_503_fast_and_the_service_recovers_by_itself(private_postgres, service):
    server, api, bearer, post_id, credentials = service
    reads = [
        (f"{api}/users/me", bearer, None),  # the token's user, loaded from the database
        (f"{api}/posts/{post_id}", {}, None),  # a read (the speed layer's loop pool with FAST_PATH)
    ]
    # One client logs in over and over: an outage must not count as failed attempts (the login guard's 429).
    login = (f"{api}/auth/token", {}, credentials)
    results: list[dict] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        while not stop.is_set():
            url, headers, body = login if n == 0 else reads[n % len(reads)]
            outcome = _request(url, headers, body)
            with lock:
                results.append(outcome)
            n += 0 if n == 0 else 1
            time.sleep(0.02)

    with ThreadPoolExecutor(CLIENTS) as pool:
        for n in range(CLIENTS):
            pool.submit(client, n)
        time.sleep(1)
        private_postgres.stop("fast")
        stopped_at = time.monotonic()
        time.sleep(OUTAGE_SECONDS)
        private_postgres.start()
        started_at = time.monotonic()
        deadline = started_at + RECOVERY_SECONDS
        while time.monotonic() < deadline:
            with lock:
                recent = [r for r in results if r["started"] > time.monotonic() - 1]
            if recent and all(r["status"] in (200, 201) for r in recent):
                break
            time.sleep(0.2)
        recovered_after = time.monotonic() - started_at
        stop.set()

    during = [r for r in results if stopped_at <= r["started"] < started_at]
    refused = [r for r in during if r["status"] == 503]
    assert refused, "no request saw the outage"
    # Every answer is one the contract knows: no 500, no dropped connection.
    unexpected = [r for r in results if r["status"] not in (200, 201, 503)]
    assert unexpected == [], unexpected[:3]
    assert all(r["code"] == "database_unavailable" and r["retry_after"] == "1" for r in refused)
    # Once the outage is known (the first 503), requests are answered at once instead of waiting out the pool.
    known_at = min(r["started"] + r["seconds"] for r in refused)
    later = [r for r in during if r["started"] > known_at]
    assert later and max(r["seconds"] for r in later) < FAST_ANSWER_SECONDS, max(r["seconds"] for r in later)
    assert recovered_after < RECOVERY_SECONDS
    messages = [line["message"] for line in server.log_lines()]
    assert sum(m.startswith("database unavailable") for m in messages) == 1, messages
    assert sum(m.startswith("database available again") for m in messages) == 1
    # Nothing per request: no traceback, no "Service Unavailable" line per 503.
    assert not [m for m in messages if m.startswith(("unhandled error", "Service Unavailable"))]
    print(
        f"outage {OUTAGE_SECONDS} s: {len(during)} requests during it, {len(refused)} answered 503, slowest after "
        f"the outage was known {max(r['seconds'] for r in later):.3f} s, first 503 after "
        f"{known_at - stopped_at:.2f} s, recovered {recovered_after:.2f} s after the restart"
    )
