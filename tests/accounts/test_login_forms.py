"""The HTML login forms (chat page, admin) share the API's brute-force guard."""

import pytest

from tests.conftest import DEFAULT_PASSWORD

pytestmark = pytest.mark.django_db

FORMS = ["/accounts/login/", "/admin/login/"]


def submit(client, path, username, password):
    return client.post(path, {"username": username, "password": password})


@pytest.mark.parametrize("path", FORMS)
def test_the_sixth_failure_locks_the_form_even_for_the_right_password(client, make_user, path):
    make_user("gwen", is_staff=True)
    for _ in range(5):
        response = submit(client, path, "gwen", "guess")
        assert response.status_code == 200
        assert b"Too many failed attempts" not in response.content
    locked = submit(client, path, "gwen", DEFAULT_PASSWORD)
    assert locked.status_code == 200  # the form again, not a redirect into the site
    assert b"Too many failed attempts" in locked.content


@pytest.mark.parametrize("path", FORMS)
def test_a_successful_form_login_clears_the_count(client, make_user, path):
    make_user("hugo", is_staff=True)
    for _ in range(4):
        submit(client, path, "hugo", "guess")
    assert submit(client, path, "hugo", DEFAULT_PASSWORD).status_code == 302
    client.logout()
    for _ in range(5):
        assert b"Too many failed attempts" not in submit(client, path, "hugo", "guess").content


def test_failures_through_the_api_count_against_the_form(client, make_user):
    make_user("iris")
    for _ in range(5):
        body = {"username": "iris", "password": "guess"}
        assert client.post("/api/v1/auth/token", body, content_type="application/json").status_code == 401
    assert b"Too many failed attempts" in submit(client, "/accounts/login/", "iris", DEFAULT_PASSWORD).content


def test_the_form_fails_closed_when_redis_is_unreachable(client, make_user, settings):
    make_user("jack")
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = submit(client, "/accounts/login/", "jack", DEFAULT_PASSWORD)
    assert response.status_code == 200
    assert b"temporarily unavailable" in response.content
