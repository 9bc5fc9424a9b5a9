"""Login brute-force protection: counted atomically in Redis, and closed when Redis is not there."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import DEFAULT_PASSWORD
from tests.helpers import http_json

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "/api/v1/auth/token"
CLOSED_PORT_REDIS = "redis://127.0.0.1:1/0"


def login(client, username, password, **headers):
    body = {"username": username, "password": password}
    return client.post(TOKEN, body, content_type="application/json", headers=headers)


def test_sixth_failure_is_refused_with_retry_after(client, make_user, settings):
    make_user("wendy")
    statuses = [login(client, "wendy", "guess").status_code for _ in range(settings.LOGIN_MAX_FAILURES)]
    assert statuses == [401] * 5

    locked = login(client, "wendy", "guess")
    assert locked.status_code == 429
    body = locked.json()
    assert body["code"] == "rate_limited"
    assert 0 < body["retry_after"] <= settings.LOGIN_FAILURE_WINDOW_SECONDS
    assert locked["Retry-After"] == str(body["retry_after"])
    # Even the right password waits out the window: the guesser must not learn it was right.
    assert login(client, "wendy", DEFAULT_PASSWORD).status_code == 429


def test_the_counter_is_per_username_and_per_client_address(client, make_user):
    make_user("xena")
    make_user("yuri")
    for _ in range(6):
        login(client, "xena", "guess")
    assert login(client, "xena", DEFAULT_PASSWORD).status_code == 429
    assert login(client, "yuri", DEFAULT_PASSWORD).status_code == 200
    assert (
        client.post(
            TOKEN,
            {"username": "xena", "password": DEFAULT_PASSWORD},
            content_type="application/json",
            REMOTE_ADDR="203.0.113.9",
        ).status_code
        == 200
    )


def test_forwarded_addresses_count_only_behind_a_trusted_proxy(client, make_user, settings):
    make_user("zack")
    # Without trusted proxies a client cannot dodge the counter by inventing X-Forwarded-For values.
    for hop in range(6):
        login(client, "zack", "guess", **{"X-Forwarded-For": f"198.51.100.{hop}"})
    assert login(client, "zack", DEFAULT_PASSWORD, **{"X-Forwarded-For": "198.51.100.77"}).status_code == 429

    settings.TRUSTED_PROXY_COUNT = 1
    assert login(client, "zack", DEFAULT_PASSWORD, **{"X-Forwarded-For": "198.51.100.77"}).status_code == 200


def test_a_successful_login_resets_the_counter(client, make_user):
    make_user("abby")
    for _ in range(4):
        login(client, "abby", "guess")
    assert login(client, "abby", DEFAULT_PASSWORD).status_code == 200
    assert [login(client, "abby", "guess").status_code for _ in range(5)] == [401] * 5


def test_concurrent_guesses_cannot_slip_past_the_limit(live_server_process, make_user):
    make_user("burt")
    body = {"username": "burt", "password": "guess"}

    def attempt(_):
        return http_json(f"{live_server_process.base_url}{TOKEN}", method="POST", body=body, timeout=30)[0]

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = sorted(pool.map(attempt, range(20)))
    assert statuses == [401] * 5 + [429] * 15


def test_login_fails_closed_when_redis_is_unreachable(client, make_user, settings):
    make_user("cleo")
    settings.REDIS_URL = CLOSED_PORT_REDIS
    response = login(client, "cleo", DEFAULT_PASSWORD)
    assert response.status_code == 503
    assert response.json()["code"] == "auth_unavailable"


def test_authenticated_requests_fail_closed_when_revocations_cannot_be_checked(client, make_user, bearer, settings):
    headers = bearer(make_user("dora"))
    settings.REDIS_URL = CLOSED_PORT_REDIS
    response = client.get("/api/v1/users/me", headers=headers)
    assert response.status_code == 503
    assert response.json()["code"] == "auth_unavailable"
