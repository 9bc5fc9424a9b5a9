"""Every way a token can be wrong is a 401 (RFC 8725): the negative suite."""

import base64
import json
import time
import uuid

import jwt
import pytest

from accounts.services import user_deactivate, user_log_out_everywhere

pytestmark = pytest.mark.django_db(transaction=True)

ME = "/api/v1/users/me"
REFRESH = "/api/v1/auth/refresh"


@pytest.fixture
def user(make_user):
    return make_user("victim")


def claims_for(user, settings, **overrides) -> dict:
    now = int(time.time())
    claims = {
        "iss": settings.JWT_ISSUER,
        "aud": settings.JWT_AUDIENCE,
        "sub": str(user.pk),
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + 300,
        "typ": "access",
        "gen": user.token_generation,
    }
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def sign(claims: dict, settings, key=None, algorithm="HS256") -> str:
    return jwt.encode(claims, key or settings.JWT_SIGNING_KEY, algorithm=algorithm)


def unsigned(claims: dict) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def assert_refused(response):
    assert response.status_code == 401, response.content
    assert response["WWW-Authenticate"] == "Bearer"
    assert response.json()["code"] in {"not_authenticated", "invalid_token"}


def test_a_well_formed_token_is_accepted(client, user, settings):
    # The control case: the forged tokens below differ from this one in exactly one way.
    token = sign(claims_for(user, settings), settings)
    assert client.get(ME, headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_no_token(client):
    assert_refused(client.get(ME))


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Bearer garbage", "Bearer a.b.c", "Basic dXNlcjpwYXNz", "x"])
def test_garbage(client, header):
    assert_refused(client.get(ME, headers={"Authorization": header}))


def test_alg_none(client, user, settings):
    assert_refused(client.get(ME, headers={"Authorization": f"Bearer {unsigned(claims_for(user, settings))}"}))


def test_wrong_signature(client, user, settings):
    token = sign(claims_for(user, settings), settings, key="another-key-of-sufficient-length-0123456789")
    assert_refused(client.get(ME, headers={"Authorization": f"Bearer {token}"}))


# PyJWT warns that the development key is short for SHA-512; the point here is that HS512 is refused at all.
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_another_hmac_algorithm_with_the_right_key(client, user, settings):
    # One pinned algorithm: even a valid HS512 signature with our key is refused.
    token = sign(claims_for(user, settings), settings, algorithm="HS512")
    assert_refused(client.get(ME, headers={"Authorization": f"Bearer {token}"}))


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"exp": int(time.time()) - 5, "iat": int(time.time()) - 400}, id="expired"),
        pytest.param({"iss": "someone-else"}, id="wrong-iss"),
        pytest.param({"aud": "another-api"}, id="wrong-aud"),
        pytest.param({"jti": None}, id="missing-jti"),
        pytest.param({"iat": None}, id="missing-iat"),
        pytest.param({"exp": None}, id="missing-exp"),
        pytest.param({"sub": None}, id="missing-sub"),
        pytest.param({"typ": None}, id="missing-typ"),
        pytest.param({"gen": None}, id="missing-generation"),
        pytest.param({"sub": "abc"}, id="non-numeric-sub"),
        pytest.param({"sub": "987654321"}, id="unknown-user"),
        # RFC 7519: NumericDate is a JSON number, not a string of digits.
        pytest.param({"exp": str(int(time.time()) + 300)}, id="exp-as-a-string"),
        pytest.param({"iat": str(int(time.time()))}, id="iat-as-a-string"),
    ],
)
def test_claims(client, user, settings, overrides):
    token = sign(claims_for(user, settings, **overrides), settings)
    assert_refused(client.get(ME, headers={"Authorization": f"Bearer {token}"}))


def test_refresh_token_used_as_access_token(client, user, issue_tokens):
    pair = issue_tokens(user)
    assert_refused(client.get(ME, headers={"Authorization": f"Bearer {pair.refresh_token}"}))


def test_access_token_used_as_refresh_token(client, user, issue_tokens):
    pair = issue_tokens(user)
    assert_refused(client.post(REFRESH, {"refresh_token": pair.access_token}, content_type="application/json"))


def test_revoked_access_token_after_logout(client, user, issue_tokens):
    pair = issue_tokens(user)
    headers = {"Authorization": f"Bearer {pair.access_token}"}
    logout = client.post(
        "/api/v1/auth/logout", {"refresh_token": pair.refresh_token}, content_type="application/json", headers=headers
    )
    assert logout.status_code == 204
    assert_refused(client.get(ME, headers=headers))


def test_reused_rotated_refresh_token_kills_the_family(client, user, issue_tokens):
    pair = issue_tokens(user)
    rotated = client.post(REFRESH, {"refresh_token": pair.refresh_token}, content_type="application/json").json()
    assert_refused(client.post(REFRESH, {"refresh_token": pair.refresh_token}, content_type="application/json"))
    # ... and then the newest token of that family fails too.
    assert_refused(client.post(REFRESH, {"refresh_token": rotated["refresh_token"]}, content_type="application/json"))


def test_deactivated_users_token(client, user, issue_tokens):
    pair = issue_tokens(user)
    user_deactivate(user=user)
    assert_refused(client.get(ME, headers={"Authorization": f"Bearer {pair.access_token}"}))
    assert_refused(client.post(REFRESH, {"refresh_token": pair.refresh_token}, content_type="application/json"))


def test_access_token_from_before_log_out_everywhere(client, user, issue_tokens):
    pair = issue_tokens(user)
    user_log_out_everywhere(user=user)
    assert_refused(client.get(ME, headers={"Authorization": f"Bearer {pair.access_token}"}))


def test_forged_refresh_token_with_a_foreign_family(client, user, settings, issue_tokens):
    issue_tokens(user)
    claims = claims_for(user, settings, typ="refresh", gen=None, fam=str(uuid.uuid4()))
    token = sign(claims, settings)
    assert_refused(client.post(REFRESH, {"refresh_token": token}, content_type="application/json"))


def test_refresh_token_with_a_malformed_family(client, user, settings):
    token = sign(claims_for(user, settings, typ="refresh", gen=None, fam="not-a-uuid"), settings)
    assert_refused(client.post(REFRESH, {"refresh_token": token}, content_type="application/json"))
