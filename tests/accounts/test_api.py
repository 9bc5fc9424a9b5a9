"""The Accounts part of the contract, endpoint by endpoint: success paths, errors, and who may do what."""

import pytest
from django.contrib.auth.hashers import identify_hasher
from django.core.management import call_command

from accounts.models import RefreshTokenFamily, User
from tests.conftest import DEFAULT_PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)

V1 = "/api/v1"
USER_OUT_KEYS = {"id", "username", "email", "display_name", "is_staff", "date_joined"}
USER_PUBLIC_KEYS = {"id", "username", "display_name", "date_joined"}


def post(client, path, body, **headers):
    return client.post(f"{V1}{path}", body, content_type="application/json", headers=headers)


def patch(client, path, body, **headers):
    return client.patch(f"{V1}{path}", body, content_type="application/json", headers=headers)


def login(client, username, password=DEFAULT_PASSWORD):
    return post(client, "/auth/token", {"username": username, "password": password})


def auth(pair) -> dict:
    return {"Authorization": f"Bearer {pair['access_token']}"}


# --- register -------------------------------------------------------------------------------------------


def test_register_creates_a_user_with_an_argon2_hash(client):
    response = post(
        client, "/auth/register", {"username": "alice", "email": "Alice@Example.COM", "password": "x7!kq-vault-rain"}
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == USER_OUT_KEYS
    assert body["username"] == "alice"
    assert body["email"] == "Alice@example.com"  # the domain part is normalised
    assert body["is_staff"] is False
    assert body["date_joined"].endswith("Z")
    assert response["Location"] == f"{V1}/users/{body['id']}"
    user = User.objects.get(pk=body["id"])
    assert identify_hasher(user.password).algorithm == "argon2"


@pytest.mark.parametrize(
    ("username", "email", "code"),
    [
        ("ALICE", "other@example.com", "username_taken"),
        ("someone", "ALICE@example.com", "email_taken"),
    ],
)
def test_register_refuses_taken_username_or_email_regardless_of_case(client, make_user, username, email, code):
    make_user("alice", email="alice@example.com")
    response = post(client, "/auth/register", {"username": username, "email": email, "password": "x7!kq-vault-rain"})
    assert response.status_code == 409
    assert response.json()["code"] == code
    assert User.objects.count() == 1


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short", "password_too_short"),
        ("password123", "password_too_common"),
        ("83920174659", "password_entirely_numeric"),
        ("bobbybobby@example", "password_too_similar"),
    ],
)
def test_register_applies_the_django_password_validators(client, password, reason):
    response = post(
        client, "/auth/register", {"username": "bobbybobby", "email": "bobbybobby@example.com", "password": password}
    )
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_error"
    assert body["detail"][0]["loc"] == ["body", "password"]
    assert body["detail"][0]["type"] == reason
    assert not User.objects.exists()


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"username": "has space", "email": "a@example.com", "password": "x7!kq-vault-rain"},
        {"username": "u" * 151, "email": "a@example.com", "password": "x7!kq-vault-rain"},
        {"username": "valid", "email": "not-an-email", "password": "x7!kq-vault-rain"},
        {"username": "valid", "email": "a@example.com", "password": "p" * 1025},
        {"username": "valid", "email": "a@example.com", "password": "x7!kq-vault-rain", "is_staff": True},
        {"username": ["valid"], "email": "a@example.com", "password": "x7!kq-vault-rain"},
    ],
)
def test_register_rejects_malformed_input_with_a_validation_error(client, payload):
    response = post(client, "/auth/register", payload)
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_error"
    assert all({"loc", "msg", "type"} == set(issue) for issue in body["detail"])
    assert not User.objects.exists()


# --- token ----------------------------------------------------------------------------------------------


def test_token_returns_a_pair(client, make_user, settings):
    make_user("carol")
    response = login(client, "carol")
    assert response.status_code == 200
    pair = response.json()
    assert set(pair) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert pair["token_type"] == "bearer"
    assert pair["expires_in"] == settings.JWT_ACCESS_TTL_SECONDS == 900
    assert RefreshTokenFamily.objects.filter(user__username="carol", revoked_at__isnull=True).count() == 1
    assert User.objects.get(username="carol").last_login is not None


def test_token_login_is_case_insensitive_on_the_username(client, make_user):
    make_user("carol")
    assert login(client, "CaRoL").status_code == 200


def test_token_refuses_with_the_same_answer_whether_or_not_the_user_exists(client, make_user):
    make_user("carol")
    wrong_password = login(client, "carol", "not the password")
    unknown_user = login(client, "nobody", "not the password")
    assert wrong_password.status_code == unknown_user.status_code == 401
    assert (
        wrong_password.json()
        == unknown_user.json()
        == {
            "detail": "Invalid username or password.",
            "code": "invalid_credentials",
        }
    )
    assert wrong_password["WWW-Authenticate"] == "Bearer"


def test_token_refuses_a_deactivated_user(client, make_user):
    make_user("dave", is_active=False)
    response = login(client, "dave")
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_credentials"


# --- refresh and logout ---------------------------------------------------------------------------------


def test_refresh_rotates_and_the_old_refresh_token_stops_working(client, make_user):
    make_user("erin")
    first = login(client, "erin").json()
    rotated = post(client, "/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert rotated.status_code == 200
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert client.get(f"{V1}/users/me", headers=auth(second)).status_code == 200

    replay = post(client, "/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert replay.status_code == 401
    assert replay.json()["code"] == "invalid_token"
    # Reuse revoked the whole family: the newest refresh token is dead too.
    assert post(client, "/auth/refresh", {"refresh_token": second["refresh_token"]}).status_code == 401
    family = RefreshTokenFamily.objects.get(user__username="erin")
    assert family.revoked_reason == RefreshTokenFamily.RevokedReason.REUSE


def test_logout_revokes_the_family_and_the_access_token(client, make_user):
    make_user("frank")
    pair = login(client, "frank").json()
    other_login = login(client, "frank").json()

    response = post(client, "/auth/logout", {"refresh_token": pair["refresh_token"]}, **auth(pair))
    assert response.status_code == 204
    assert response.content == b""
    assert client.get(f"{V1}/users/me", headers=auth(pair)).status_code == 401
    assert post(client, "/auth/refresh", {"refresh_token": pair["refresh_token"]}).status_code == 401
    # Another login (another device) is unaffected.
    assert client.get(f"{V1}/users/me", headers=auth(other_login)).status_code == 200
    assert post(client, "/auth/refresh", {"refresh_token": other_login["refresh_token"]}).status_code == 200


def test_logout_needs_a_bearer_token(client, make_user):
    make_user("gina")
    pair = login(client, "gina").json()
    response = post(client, "/auth/logout", {"refresh_token": pair["refresh_token"]})
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


def test_logout_with_someone_elses_refresh_token_revokes_nothing(client, make_user):
    make_user("hank")
    make_user("ivy")
    hank = login(client, "hank").json()
    ivy = login(client, "ivy").json()
    response = post(client, "/auth/logout", {"refresh_token": ivy["refresh_token"]}, **auth(hank))
    assert response.status_code == 401
    assert post(client, "/auth/refresh", {"refresh_token": ivy["refresh_token"]}).status_code == 200
    assert client.get(f"{V1}/users/me", headers=auth(hank)).status_code == 200


# --- the caller's profile -------------------------------------------------------------------------------


def test_me_returns_the_callers_profile(client, make_user, bearer):
    user = make_user("jane", display_name="Jane D.")
    response = client.get(f"{V1}/users/me", headers=bearer(user))
    assert response.status_code == 200
    assert response.json() | {"date_joined": None} == {
        "id": user.pk,
        "username": "jane",
        "email": "jane@example.com",
        "display_name": "Jane D.",
        "is_staff": False,
        "date_joined": None,
    }


def test_patch_me_changes_display_name_and_email(client, make_user, bearer):
    user = make_user("kim")
    response = patch(client, "/users/me", {"display_name": "Kim K", "email": "kim@new.example.com"}, **bearer(user))
    assert response.status_code == 200
    assert response.json()["display_name"] == "Kim K"
    user.refresh_from_db()
    assert (user.display_name, user.email) == ("Kim K", "kim@new.example.com")


def test_patch_me_refuses_an_email_someone_else_has(client, make_user, bearer):
    make_user("lea", email="lea@example.com")
    user = make_user("max")
    response = patch(client, "/users/me", {"email": "LEA@example.com"}, **bearer(user))
    assert response.status_code == 409
    assert response.json()["code"] == "email_taken"
    user.refresh_from_db()
    assert user.email == "max@example.com"


@pytest.mark.parametrize(
    "payload", [{"email": "nope"}, {"display_name": "x" * 151}, {"is_staff": True}, {"username": "renamed"}]
)
def test_patch_me_rejects_invalid_or_unknown_fields(client, make_user, bearer, payload):
    user = make_user("ned")
    response = patch(client, "/users/me", payload, **bearer(user))
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    user.refresh_from_db()
    assert not user.is_staff
    assert user.username == "ned"


def test_password_change_logs_out_every_session(client, make_user):
    make_user("olga")
    pair = login(client, "olga").json()
    other_device = login(client, "olga").json()
    new_password = "a brand new passphrase"
    payload = {"current_password": DEFAULT_PASSWORD, "new_password": new_password}
    response = post(client, "/users/me/password", payload, **auth(pair))
    assert response.status_code == 204

    for old in (pair, other_device):
        assert client.get(f"{V1}/users/me", headers=auth(old)).status_code == 401
        assert post(client, "/auth/refresh", {"refresh_token": old["refresh_token"]}).status_code == 401
    assert login(client, "olga").status_code == 401
    assert login(client, "olga", new_password).status_code == 200


def test_password_change_needs_the_current_password(client, make_user, bearer):
    user = make_user("pete")
    payload = {"current_password": "wrong", "new_password": "a brand new passphrase"}
    response = post(client, "/users/me/password", payload, **bearer(user))
    assert response.status_code == 400
    assert response.json()["code"] == "wrong_password"
    user.refresh_from_db()
    assert user.check_password(DEFAULT_PASSWORD)


def test_password_change_validates_the_new_password(client, make_user, bearer):
    user = make_user("quinn")
    payload = {"current_password": DEFAULT_PASSWORD, "new_password": "12345678"}
    response = post(client, "/users/me/password", payload, **bearer(user))
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] in {"password_too_common", "password_entirely_numeric"}
    user.refresh_from_db()
    assert user.check_password(DEFAULT_PASSWORD)


# --- the user directory ---------------------------------------------------------------------------------


def test_users_list_pages_through_active_users(client, make_user, bearer):
    viewer = make_user("viewer")
    for index in range(4):
        make_user(f"member{index}")
    make_user("gone", is_active=False)
    response = client.get(f"{V1}/users/?page=2&per_page=2", headers=bearer(viewer))
    assert response.status_code == 200
    body = response.json()
    assert body["pagination"] == {"page": 2, "per_page": 2, "total": 5, "pages": 3}
    assert [item["username"] for item in body["items"]] == ["member1", "member2"]
    assert all(set(item) == USER_PUBLIC_KEYS for item in body["items"])


def test_users_list_beyond_the_last_page_is_empty(client, make_user, bearer):
    viewer = make_user()
    body = client.get(f"{V1}/users/?page=50", headers=bearer(viewer)).json()
    assert body["items"] == []
    assert body["pagination"]["total"] == 1


@pytest.mark.parametrize("query", ["per_page=0", "per_page=101", "page=0", "page=-1", "page=abc", "page=10000000"])
def test_users_list_refuses_out_of_range_paging(client, make_user, bearer, query):
    response = client.get(f"{V1}/users/?{query}", headers=bearer(make_user()))
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


@pytest.mark.parametrize("per_page", [1, 20, 100])
def test_users_list_costs_the_same_queries_whatever_the_page_size(
    client, make_user, bearer, count_statements, per_page
):
    viewer = make_user()
    User.objects.bulk_create(User(username=f"bulk{i}", email=f"bulk{i}@example.com") for i in range(120))
    headers = bearer(viewer)
    # One for the caller (authentication), one count, one page.
    with count_statements() as counted:
        response = client.get(f"{V1}/users/?per_page={per_page}", headers=headers)
    assert counted.total == 3
    assert len(response.json()["items"]) == per_page


def test_user_detail_is_public_for_active_users_only(client, make_user):
    active = make_user("rita", display_name="Rita")
    inactive = make_user("sam", is_active=False)
    response = client.get(f"{V1}/users/{active.pk}")
    assert response.status_code == 200
    assert response.json() | {"date_joined": None} == {
        "id": active.pk,
        "username": "rita",
        "display_name": "Rita",
        "date_joined": None,
    }
    for missing in (inactive.pk, 987654321):
        response = client.get(f"{V1}/users/{missing}")
        assert response.status_code == 404
        assert response.json() == {"detail": "No such user.", "code": "not_found"}


@pytest.mark.parametrize("user_id", ["0", "-3", "abc", "99999999999999999999999"])
def test_user_detail_refuses_impossible_ids_without_error(client, user_id):
    response = client.get(f"{V1}/users/{user_id}")
    assert response.status_code in {404, 422}
    assert response.json()["code"] in {"not_found", "validation_error"}


def test_staff_delete_deactivates_and_revokes(client, make_user, bearer):
    staff = make_user("boss", is_staff=True)
    target = make_user("tess")
    pair = login(client, "tess").json()

    response = client.delete(f"{V1}/users/{target.pk}", headers=bearer(staff))
    assert response.status_code == 204
    target.refresh_from_db()
    assert target.is_active is False  # deactivated, data kept
    assert client.get(f"{V1}/users/me", headers=auth(pair)).status_code == 401
    assert post(client, "/auth/refresh", {"refresh_token": pair["refresh_token"]}).status_code == 401
    assert login(client, "tess").status_code == 401
    assert client.get(f"{V1}/users/{target.pk}").status_code == 404
    assert client.delete(f"{V1}/users/{target.pk}", headers=bearer(staff)).status_code == 404


def test_staff_cannot_deactivate_themselves(client, make_user, bearer):
    staff = make_user("boss", is_staff=True)
    response = client.delete(f"{V1}/users/{staff.pk}", headers=bearer(staff))
    assert response.status_code == 409
    assert response.json()["code"] == "cannot_deactivate_self"


# --- who may do what ------------------------------------------------------------------------------------


@pytest.fixture
def cast(make_user, bearer):
    """User A, user B and staff, with a way to send a request as each of them (or anonymously)."""
    users = {"user_a": make_user("user_a"), "user_b": make_user("user_b"), "staff": make_user("staff", is_staff=True)}

    def headers(role: str) -> dict:
        return {} if role == "anonymous" else bearer(users[role])

    return users, headers


ROLES = ["anonymous", "user_a", "user_b", "staff"]


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [
        ("get", "/users/me", None, {"anonymous": 401, "user_a": 200, "user_b": 200, "staff": 200}),
        ("patch", "/users/me", {"display_name": "x"}, {"anonymous": 401, "user_a": 200, "user_b": 200, "staff": 200}),
        ("get", "/users/", None, {"anonymous": 401, "user_a": 200, "user_b": 200, "staff": 200}),
        ("get", "/users/{user_a}", None, {"anonymous": 200, "user_a": 200, "user_b": 200, "staff": 200}),
        ("delete", "/users/{user_a}", None, {"anonymous": 401, "user_a": 409, "user_b": 403, "staff": 204}),
        (
            "post",
            "/users/me/password",
            {"current_password": "wrong", "new_password": "a brand new passphrase"},
            {"anonymous": 401, "user_a": 400, "user_b": 400, "staff": 400},
        ),
    ],
)
@pytest.mark.parametrize("role", ROLES)
def test_authorization_matrix(client, cast, role, method, path, body, expected):
    users, headers = cast
    url = V1 + path.format(user_a=users["user_a"].pk)
    kwargs = {"content_type": "application/json", "data": body} if body is not None else {}
    response = getattr(client, method)(url, headers=headers(role), **kwargs)
    # user_a deleting user_a is a non-staff caller: refused before anything else is considered.
    want = 403 if (role == "user_a" and method == "delete") else expected[role]
    assert response.status_code == want, response.content
    if want == 401:
        assert response["WWW-Authenticate"] == "Bearer"


# --- management commands --------------------------------------------------------------------------------


def test_revoke_tokens_command_logs_the_user_out_everywhere(client, make_user):
    make_user("uma")
    pair = login(client, "uma").json()
    call_command("revoke_tokens", "UMA")
    assert client.get(f"{V1}/users/me", headers=auth(pair)).status_code == 401
    assert post(client, "/auth/refresh", {"refresh_token": pair["refresh_token"]}).status_code == 401


def test_createsuperuser_works_with_the_custom_user(monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a root passphrase")
    call_command("createsuperuser", interactive=False, username="root", email="root@example.com", verbosity=0)
    root = User.objects.get(username="root")
    assert root.is_superuser and root.is_staff
    assert root.check_password("a root passphrase")


def test_a_stale_full_save_does_not_bring_revoked_tokens_back(client, make_user):
    """The admin's change form saves an instance loaded before a concurrent "log out everywhere"."""
    from accounts.services import user_log_out_everywhere

    make_user("vera")
    pair = login(client, "vera").json()
    stale = User.objects.get(username="vera")
    user_log_out_everywhere(user=User.objects.get(username="vera"))
    stale.display_name = "edited in the admin"
    stale.save()
    assert client.get(f"{V1}/users/me", headers=auth(pair)).status_code == 401
    assert User.objects.get(username="vera").display_name == "edited in the admin"


def test_log_out_everywhere_ends_django_sessions_too(client, make_user):
    from accounts.services import user_log_out_everywhere

    user = make_user("wes", is_staff=True, is_superuser=True)
    client.force_login(user)
    assert client.get("/admin/").status_code == 200
    user_log_out_everywhere(user=user)
    assert client.get("/admin/").status_code == 302  # back to the login page
