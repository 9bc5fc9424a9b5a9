"""The webhooks API (`/api/v1/webhooks`): registering, listing, changing and deleting endpoints, their delivery
records, who may see what, and the SSRF guard on the URLs they name."""

import pytest

from webhooks.models import WebhookDelivery, WebhookEndpoint

pytestmark = pytest.mark.django_db(transaction=True)

WEBHOOKS = "/api/v1/webhooks"
# Public addresses written as literals: resolving them needs no DNS.
PUBLIC_URL = "https://93.184.215.14/hooks/blog"
OTHER_PUBLIC_URL = "http://[2606:4700::1111]:8080/in"
WEBHOOK_OUT_KEYS = {"id", "url", "events", "is_active", "created_at", "updated_at"}


def register(client, headers, url=PUBLIC_URL, **fields):
    return client.post(WEBHOOKS, {"url": url, **fields}, content_type="application/json", headers=headers)


def patch(client, headers, webhook_id, body):
    return client.patch(f"{WEBHOOKS}/{webhook_id}", body, content_type="application/json", headers=headers)


def assert_invalid(response, loc, type_=None):
    assert response.status_code == 422, response.content
    body = response.json()
    assert body["code"] == "validation_error"
    assert [issue["loc"] for issue in body["detail"]] == [loc]
    if type_ is not None:
        assert body["detail"][0]["type"] == type_
    return body["detail"][0]


# --- register ---------------------------------------------------------------------------------------------


def test_register_answers_201_with_location_and_the_secret_shown_only_then(client, make_user, bearer):
    headers = bearer(make_user())
    response = register(client, headers)
    assert response.status_code == 201
    created = response.json()
    assert set(created) == WEBHOOK_OUT_KEYS | {"secret"}
    assert created["url"] == PUBLIC_URL
    assert created["events"] == ["post.published"]
    assert created["is_active"] is True
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
    assert created["created_at"].endswith("Z")
    assert response["Location"] == f"{WEBHOOKS}/{created['id']}"

    shown = client.get(response["Location"], headers=headers).json()
    assert shown == {key: value for key, value in created.items() if key != "secret"}
    assert "secret" not in client.get(WEBHOOKS, headers=headers).json()["items"][0]
    # Each endpoint gets a secret of its own.
    assert register(client, headers, OTHER_PUBLIC_URL).json()["secret"] != created["secret"]


def test_the_url_is_normalised(client, make_user, bearer):
    response = register(client, bearer(make_user()), "  HTTPS://93.184.215.14:8443/a/b?c=d#fragment  ")
    assert response.status_code == 201
    assert response.json()["url"] == "https://93.184.215.14:8443/a/b?c=d"
    # A request line is ASCII: the rest is percent-encoded, escapes already there kept.
    response = register(client, bearer(make_user()), "http://93.184.215.14/grüße?q=ä&r=a%20b")
    assert response.json()["url"] == "http://93.184.215.14/gr%C3%BC%C3%9Fe?q=%C3%A4&r=a%20b"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/hook", "loopback"),
        ("http://localhost:8000/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://2130706433/hook", "loopback"),  # 127.0.0.1 as one number
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("http://172.16.0.1/hook", "private"),
        ("http://192.168.1.10/hook", "private"),
        ("http://[fd12:3456::1]/hook", "private"),  # unique local
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "metadata"),
        ("http://169.254.10.1/hook", "link-local"),
        ("http://[fe80::1]/hook", "link-local"),
        ("http://0.0.0.0/hook", "unspecified"),
        ("http://224.0.0.1/hook", "multicast"),
        ("http://100.64.0.1/hook", "non-public"),  # carrier-grade NAT
        ("http://240.0.0.1/hook", "private"),  # reserved, and private to Python
    ],
)
def test_urls_that_resolve_to_internal_addresses_are_refused(client, make_user, bearer, url, reason):
    issue = assert_invalid(register(client, bearer(make_user()), url), ["body", "url"], "url_not_allowed")
    assert reason in issue["msg"]
    assert not WebhookEndpoint.objects.exists()


def test_loopback_is_allowed_only_when_the_setting_says_so(client, make_user, bearer, settings):
    headers = bearer(make_user())
    assert_invalid(register(client, headers, "http://127.0.0.1:9/hook"), ["body", "url"], "url_not_allowed")
    settings.WEBHOOK_ALLOW_LOOPBACK = True
    assert register(client, headers, "http://127.0.0.1:9/hook").status_code == 201
    # Loopback only: private and metadata addresses stay refused.
    assert_invalid(register(client, headers, "http://10.0.0.1/hook"), ["body", "url"], "url_not_allowed")
    assert_invalid(register(client, headers, "http://169.254.169.254/"), ["body", "url"], "url_not_allowed")


def test_a_host_that_does_not_resolve_is_refused(client, make_user, bearer):
    response = register(client, bearer(make_user()), "https://no-such-host.invalid/hook")
    assert_invalid(response, ["body", "url"], "url_unresolvable")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"url": None},
        {"url": 42},
        {"url": ["http://93.184.215.14/"]},
        {"url": ""},
        {"url": "93.184.215.14/hook"},
        {"url": "ftp://93.184.215.14/hook"},
        {"url": "javascript:alert(1)"},
        {"url": "file:///etc/passwd"},
        {"url": "http://"},
        {"url": "http://user:pass@93.184.215.14/"},
        {"url": "http://93.184.215.14:99999/"},
        {"url": "http://93.184.215.14:0/"},
        {"url": "http://[::1/"},
        {"url": "http://exa mple.com/"},
        {"url": "http://example.com/\x00"},
        {"url": "http://example.com/\r\nX-Injected: 1"},
        {"url": "http://" + "a" * 64 + ".com/"},
        {"url": "http://" + ("a" * 60 + ".") * 5 + "com/"},
        {"url": "https://93.184.215.14/" + "p" * 2000},
        {"url": PUBLIC_URL, "events": []},
        {"url": PUBLIC_URL, "events": ["post.deleted"]},
        {"url": PUBLIC_URL, "events": "post.published"},
        {"url": PUBLIC_URL, "events": None},
        {"url": PUBLIC_URL, "secret": "mine"},
        {"url": PUBLIC_URL, "is_active": False},
    ],
)
def test_invalid_input_is_a_422_never_a_500(client, make_user, bearer, body):
    response = client.post(WEBHOOKS, body, content_type="application/json", headers=bearer(make_user()))
    assert response.status_code == 422, response.content
    assert response.json()["code"] == "validation_error"


def test_a_body_that_is_not_json_is_a_400(client, make_user, bearer):
    response = client.post(WEBHOOKS, "{not json", content_type="application/json", headers=bearer(make_user()))
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_json"


def test_duplicate_events_count_once(client, make_user, bearer):
    response = register(client, bearer(make_user()), events=["post.published", "post.published"])
    assert response.json()["events"] == ["post.published"]


def test_one_url_once_per_owner(client, make_user, bearer):
    headers = bearer(make_user())
    assert register(client, headers).status_code == 201
    response = register(client, headers)
    assert (response.status_code, response.json()["code"]) == (409, "webhook_exists")
    # Someone else may register the same URL.
    assert register(client, bearer(make_user())).status_code == 201


def test_endpoints_per_owner_are_capped(client, make_user, bearer, settings):
    settings.WEBHOOK_MAX_ENDPOINTS_PER_USER = 2
    headers = bearer(make_user())
    for n in range(2):
        assert register(client, headers, f"{PUBLIC_URL}/{n}").status_code == 201
    response = register(client, headers, f"{PUBLIC_URL}/2")
    assert (response.status_code, response.json()["code"]) == (409, "webhook_limit_reached")
    assert register(client, bearer(make_user()), f"{PUBLIC_URL}/2").status_code == 201


def test_every_operation_needs_a_bearer_token(client):
    for method, path in [
        ("post", WEBHOOKS),
        ("get", WEBHOOKS),
        ("get", f"{WEBHOOKS}/1"),
        ("patch", f"{WEBHOOKS}/1"),
        ("delete", f"{WEBHOOKS}/1"),
        ("get", f"{WEBHOOKS}/1/deliveries"),
    ]:
        response = getattr(client, method)(path, {}, content_type="application/json")
        assert response.status_code == 401, (method, path)
        assert response["WWW-Authenticate"] == "Bearer"


# --- list, read, change, delete -------------------------------------------------------------------------


def test_list_is_the_owners_newest_first_and_paginated(client, make_user, bearer):
    headers = bearer(make_user())
    ids = [register(client, headers, f"{PUBLIC_URL}/{n}").json()["id"] for n in range(3)]
    register(client, bearer(make_user()), PUBLIC_URL)

    page = client.get(WEBHOOKS, {"per_page": 2}, headers=headers).json()
    assert [item["id"] for item in page["items"]] == ids[::-1][:2]
    assert page["pagination"] == {"page": 1, "per_page": 2, "total": 3, "pages": 2}
    assert [
        item["id"] for item in client.get(WEBHOOKS, {"per_page": 2, "page": 2}, headers=headers).json()["items"]
    ] == [ids[0]]
    assert client.get(WEBHOOKS, {"per_page": 0}, headers=headers).status_code == 422


def test_patch_changes_url_events_and_active(client, make_user, bearer):
    headers = bearer(make_user())
    created = register(client, headers).json()

    response = patch(client, headers, created["id"], {"url": OTHER_PUBLIC_URL, "is_active": False})
    assert response.status_code == 200
    changed = response.json()
    assert (changed["url"], changed["is_active"], changed["events"]) == (OTHER_PUBLIC_URL, False, ["post.published"])
    assert changed["updated_at"] > created["updated_at"]
    assert patch(client, headers, created["id"], {"events": ["post.published"]}).status_code == 200
    assert client.get(f"{WEBHOOKS}/{created['id']}", headers=headers).json()["url"] == OTHER_PUBLIC_URL


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"url": None}, ["body", "url"]),
        ({"is_active": None}, ["body", "is_active"]),
        ({"is_active": "maybe"}, ["body", "is_active"]),
        ({"events": []}, ["body", "events"]),
        ({"secret": "mine"}, ["body", "secret"]),
        ({"url": "gopher://93.184.215.14/"}, ["body", "url"]),
    ],
)
def test_patch_refuses_invalid_fields(client, make_user, bearer, body, loc):
    headers = bearer(make_user())
    webhook_id = register(client, headers).json()["id"]
    assert_invalid(patch(client, headers, webhook_id, body), loc)


def test_patch_to_an_internal_url_is_refused_and_changes_nothing(client, make_user, bearer):
    headers = bearer(make_user())
    webhook_id = register(client, headers).json()["id"]
    response = patch(client, headers, webhook_id, {"url": "http://169.254.169.254/", "is_active": False})
    assert_invalid(response, ["body", "url"], "url_not_allowed")
    shown = client.get(f"{WEBHOOKS}/{webhook_id}", headers=headers).json()
    assert (shown["url"], shown["is_active"]) == (PUBLIC_URL, True)


def test_patch_to_a_url_already_registered_is_a_conflict(client, make_user, bearer):
    headers = bearer(make_user())
    register(client, headers, OTHER_PUBLIC_URL)
    webhook_id = register(client, headers).json()["id"]
    response = patch(client, headers, webhook_id, {"url": OTHER_PUBLIC_URL})
    assert (response.status_code, response.json()["code"]) == (409, "webhook_exists")


def test_delete_answers_204_and_takes_the_deliveries_along(client, make_user, bearer):
    headers = bearer(make_user())
    webhook_id = register(client, headers).json()["id"]
    WebhookDelivery.objects.create(endpoint_id=webhook_id, event="post.published", event_id="evt_1", payload={})

    response = client.delete(f"{WEBHOOKS}/{webhook_id}", headers=headers)
    assert response.status_code == 204
    assert response.content == b""
    assert client.get(f"{WEBHOOKS}/{webhook_id}", headers=headers).status_code == 404
    assert client.delete(f"{WEBHOOKS}/{webhook_id}", headers=headers).status_code == 404
    assert not WebhookDelivery.objects.exists()


def test_someone_elses_webhook_does_not_exist_for_you(client, make_user, bearer):
    owner_headers = bearer(make_user())
    webhook_id = register(client, owner_headers).json()["id"]
    other = bearer(make_user())

    for response in (
        client.get(f"{WEBHOOKS}/{webhook_id}", headers=other),
        patch(client, other, webhook_id, {"is_active": False}),
        client.delete(f"{WEBHOOKS}/{webhook_id}", headers=other),
        client.get(f"{WEBHOOKS}/{webhook_id}/deliveries", headers=other),
    ):
        assert response.status_code == 404
        assert response.json() == {"detail": "No such webhook.", "code": "not_found"}
    assert client.get(WEBHOOKS, headers=other).json()["items"] == []
    assert client.get(f"{WEBHOOKS}/{webhook_id}", headers=owner_headers).json()["is_active"] is True


@pytest.mark.parametrize("webhook_id", ["0", "-1", "abc", str(2**63), "1.5"])
def test_out_of_range_ids_are_422(client, make_user, bearer, webhook_id):
    response = client.get(f"{WEBHOOKS}/{webhook_id}", headers=bearer(make_user()))
    assert response.status_code == 422


# --- deliveries -----------------------------------------------------------------------------------------


def test_deliveries_are_listed_newest_first_with_their_outcome(client, make_user, bearer, count_statements):
    headers = bearer(make_user())
    webhook_id = register(client, headers).json()["id"]
    other_id = register(client, headers, OTHER_PUBLIC_URL).json()["id"]
    deliveries = [
        WebhookDelivery.objects.create(
            endpoint_id=webhook_id, event="post.published", event_id=f"evt_{n}", payload={"n": n}
        )
        for n in range(3)
    ]
    WebhookDelivery.objects.filter(pk=deliveries[0].pk).update(
        status="failed", attempts=3, last_response_status=500, last_error="Gave up after 3 attempts; last: HTTP 500"
    )
    WebhookDelivery.objects.create(endpoint_id=other_id, event="post.published", event_id="evt_0", payload={})

    with count_statements() as counted:
        response = client.get(f"{WEBHOOKS}/{webhook_id}/deliveries", {"per_page": 2}, headers=headers)
    assert counted.total == 4  # the user, the endpoint, count, page
    assert response.status_code == 200
    page = response.json()
    assert [item["event_id"] for item in page["items"]] == ["evt_2", "evt_1"]
    assert page["pagination"] == {"page": 1, "per_page": 2, "total": 3, "pages": 2}
    newest = page["items"][0]
    assert set(newest) == {
        "id",
        "event",
        "event_id",
        "status",
        "attempts",
        "last_response_status",
        "last_error",
        "created_at",
        "next_attempt_at",
        "delivered_at",
    }
    assert (newest["status"], newest["attempts"], newest["delivered_at"]) == ("pending", 0, None)
    oldest = client.get(f"{WEBHOOKS}/{webhook_id}/deliveries", {"per_page": 2, "page": 2}, headers=headers).json()
    assert (oldest["items"][0]["status"], oldest["items"][0]["last_response_status"]) == ("failed", 500)
    assert oldest["items"][0]["last_error"].startswith("Gave up after 3 attempts")


def test_the_schema_documents_every_answer(client):
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    for path, methods in [
        ("/api/v1/webhooks", {"get", "post"}),
        ("/api/v1/webhooks/{webhook_id}", {"get", "patch", "delete"}),
        ("/api/v1/webhooks/{webhook_id}/deliveries", {"get"}),
    ]:
        assert set(paths[path]) == methods
        for method in methods:
            responses = set(paths[path][method]["responses"])
            assert {"401", "422", "429"} <= responses, (path, method)
            if "{webhook_id}" in path:
                assert "404" in responses
    assert "409" in paths["/api/v1/webhooks"]["post"]["responses"]
