"""`POST /api/v2/auth/password-grant`: the login of `POST /auth/token` as OAuth 2.0's password grant, a form, which
the docs' Authorize dialog sends; and the docs offering it beside the bearer token."""

import pytest

from tests.conftest import DEFAULT_PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)

GRANT = "/api/v2/auth/password-grant"
FORM = "application/x-www-form-urlencoded"


def grant(client, **fields):
    from urllib.parse import urlencode

    return client.post(GRANT, urlencode({"grant_type": "password", **fields}), content_type=FORM)


def test_a_form_login_gives_a_token_pair_that_works(client, make_user):
    user = make_user()
    # What Swagger UI sends: its own client_id and scope fields too, empty.
    response = grant(client, username=user.username, password=DEFAULT_PASSWORD, client_id="", scope="")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] > 0
    me = client.get("/api/v2/users/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200 and me.json()["id"] == user.pk


def test_wrong_credentials_are_the_same_401_and_count_against_the_brute_force_guard(client, make_user):
    user = make_user()
    unknown = grant(client, username="nobody", password="x")
    statuses = [grant(client, username=user.username, password="wrong").status_code for _ in range(5)]
    assert unknown.status_code == 401
    assert unknown["WWW-Authenticate"] == "Bearer"
    assert statuses == [401] * 5
    # The guard the JSON login has: the right password too, until the window ends.
    assert grant(client, username=user.username, password=DEFAULT_PASSWORD).status_code == 429


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"grant_type": "authorization_code", "username": "a", "password": "b"}, ["body", "grant_type"]),
        ({"username": "a\x00b", "password": "b"}, ["body", "username"]),
        ({"username": "a"}, ["body", "password"]),
    ],
)
def test_a_bad_form_is_a_422_naming_the_field(client, fields, loc):
    response = grant(client, **fields)
    assert response.status_code == 422
    assert [issue["loc"] for issue in response.json()["detail"]] == [loc]


@pytest.mark.parametrize(
    "content_type", ["multipart/form-data", "multipart/form-data; boundary=x", "multipart/form-data; boundary="]
)
def test_a_form_that_cannot_be_read_is_a_400(client, content_type):
    response = client.post(GRANT, b"grant_type=password&username=a&password=b", content_type=content_type)
    assert response.status_code in (400, 422), response.content
    if response.status_code == 400:
        assert response.json()["code"] == "invalid_form"


def test_v1_is_frozen_without_it(client):
    assert client.post("/api/v1/auth/password-grant", "grant_type=password", content_type=FORM).status_code == 404


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_docs_offer_the_bearer_token_and_the_password_flow(client, version):
    schema = client.get(f"/api/{version}/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes == {
        "JWTAuth": {"type": "http", "scheme": "bearer"},
        "PasswordGrant": {
            "type": "oauth2",
            "description": schemes["PasswordGrant"]["description"],
            "flows": {"password": {"tokenUrl": GRANT, "scopes": {}}},
        },
    }
    me = schema["paths"][f"/api/{version}/users/me"]["get"]
    assert me["security"] == [{"JWTAuth": []}, {"PasswordGrant": []}]
