"""What every API response promises: the contract's error bodies, request ids, the body size limit."""

import http.client
import inspect
import json
import logging
import re

import pytest

pytestmark = pytest.mark.django_db(transaction=True)

REGISTER = "/api/v1/auth/register"


def test_unknown_api_path_is_a_json_404(client):
    response = client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not Found", "code": "not_found"}


def test_wrong_method_is_a_json_405_naming_the_allowed_ones(client):
    response = client.put(REGISTER)
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert "POST" in response["Allow"]


def test_validation_error_body(client):
    response = client.post(REGISTER, {"username": "ok", "email": "bad"}, content_type="application/json")
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_error"
    locations = [issue["loc"][-1] for issue in body["detail"]]
    assert "email" in locations and "password" in locations
    assert all(set(issue) == {"loc", "msg", "type"} for issue in body["detail"])


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_validation_error_locations_have_one_shape_everywhere(client, make_user, bearer, version):
    """["body" | "query" | "path", <field>]: a schema's issue and a service's own read alike."""
    headers = bearer(make_user())
    api = f"/api/{version}"
    cases = [
        (client.post(f"{api}/auth/register", {"username": "ok"}, content_type="application/json"), ["body", "email"]),
        (client.post(f"{api}/auth/register", [], content_type="application/json"), ["body"]),
        (
            client.post(
                f"{api}/auth/register",
                {"username": "ok", "email": "ok@example.com", "password": "123"},
                content_type="application/json",
            ),
            ["body", "password"],
        ),
        (
            client.patch(f"{api}/users/me", {"email": 5}, content_type="application/json", headers=headers),
            ["body", "email"],
        ),
        (client.get(f"{api}/users/{'x'}"), ["path", "user_id"]),
        (client.get(f"{api}/chat/rooms/a/messages", {"limit": "x"}, headers=headers), ["query", "limit"]),
    ]
    for response, loc in cases:
        assert response.status_code == 422, response.content
        assert response.json()["detail"][0]["loc"] == loc, response.content


def test_every_body_parameter_has_the_name_the_error_handler_strips():
    from ninja import Router, Schema

    from accounts import api as accounts_api
    from chat import api as chat_api
    from config.api import BODY_PARAMETER
    from posts import api as posts_api

    routers = [value for module in (accounts_api, chat_api, posts_api) for value in vars(module).values()]
    bodies = []
    for router in (value for value in routers if isinstance(value, Router)):
        for path_view in router.path_operations.values():
            for operation in path_view.operations:
                for name, parameter in inspect.signature(operation.view_func).parameters.items():
                    # A body is a bare schema; query parameters are Query[...] (typing.Annotated, not a class).
                    if isinstance(parameter.annotation, type) and issubclass(parameter.annotation, Schema):
                        bodies.append((operation.view_func.__name__, name))
    assert len(bodies) > 10
    assert [body for body in bodies if body[1] != BODY_PARAMETER] == []


def test_validation_errors_never_echo_the_input(client):
    response = client.post(REGISTER, {"username": "x", "password": "p" * 1025}, content_type="application/json")
    assert response.status_code == 422
    assert "ppppp" not in response.content.decode()


@pytest.mark.parametrize("raw", ['{"username": ', "not json at all", "\x00\xff", "[1, 2", '{"a": NaN'])
def test_malformed_json_is_a_400(client, raw):
    response = client.post(REGISTER, raw, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_json"


@pytest.mark.parametrize("body", ["[]", "42", '"text"', "null", '{"username": {"nested": []}}'])
def test_json_of_the_wrong_shape_is_a_422(client, body):
    response = client.post(REGISTER, body, content_type="application/json")
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


def test_declared_oversized_body_is_refused_before_it_is_read(client, settings):
    oversized = "x" * (settings.MAX_REQUEST_BODY_BYTES + 1)
    response = client.post(REGISTER, json.dumps({"username": oversized}), content_type="application/json")
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_chunked_oversized_body_is_refused(live_server_process, settings):
    """No Content-Length to check up front: the limit applies when the body is read."""
    connection = http.client.HTTPConnection("127.0.0.1", live_server_process.port, timeout=30)
    chunk = b"x" * 65536
    chunks = [b'{"username": "', *[chunk] * (settings.MAX_REQUEST_BODY_BYTES // len(chunk) + 1), b'"}']
    connection.request(
        "POST", REGISTER, body=iter(chunks), headers={"Content-Type": "application/json"}, encode_chunked=True
    )
    response = connection.getresponse()
    assert response.status == 413
    assert json.loads(response.read())["code"] == "payload_too_large"


@pytest.mark.parametrize("path", ["/api/v1/posts/", "/api/v2/posts", "/admin/login/", "/chat/"])
def test_a_host_outside_the_allowed_hosts_is_refused(client, path):
    response = client.get(path, headers={"Host": "attacker.example"})
    assert response.status_code == 400
    assert response.json() == {
        "detail": "The Host header names no host this service answers for.",
        "code": "bad_host",
    }
    assert response["X-Request-ID"]


def test_probes_answer_under_any_host_as_orchestrators_address_pods_by_ip(client):
    assert client.get("/health", headers={"Host": "10.1.2.3:8000"}).status_code == 200
    assert client.get("/ready", headers={"Host": "10.1.2.3:8000"}).status_code == 200
    assert client.get("/metrics", headers={"Host": "10.1.2.3:8000"}).status_code == 200


def test_request_id_is_echoed(client):
    response = client.get("/health", headers={"X-Request-ID": "trace-abc.123:xyz"})
    assert response["X-Request-ID"] == "trace-abc.123:xyz"


def test_request_id_is_generated_when_absent(client):
    first = client.get("/api/v1/users/1")["X-Request-ID"]
    second = client.get("/api/v1/users/1")["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second


@pytest.mark.parametrize("unsafe", ["has spaces", "x" * 129, "new\\nline", "<script>"])
def test_unsafe_request_ids_are_replaced(client, unsafe):
    response = client.get("/health", headers={"X-Request-ID": unsafe})
    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-ID"])


@pytest.mark.urls("tests.failing_urls")
def test_unexpected_exception_is_a_500_with_the_request_id_and_is_logged(client, caplog):
    with caplog.at_level(logging.ERROR, logger="api"):
        response = client.get("/crashing/boom", headers={"X-Request-ID": "req-500-check"})
    assert response.status_code == 500
    assert response.json() == {
        "detail": "Internal server error.",
        "code": "internal_error",
        "request_id": "req-500-check",
    }
    assert "hunter2" not in response.content.decode()
    record = next(r for r in caplog.records if r.name == "api")
    assert record.exc_info and isinstance(record.exc_info[1], RuntimeError)


def test_request_id_reaches_the_servers_json_logs(live_server_process):
    connection = http.client.HTTPConnection("127.0.0.1", live_server_process.port, timeout=10)
    connection.request(
        "GET", "/api/v1/users/me", headers={"Authorization": "Bearer garbage", "X-Request-ID": "log-me-1"}
    )
    assert connection.getresponse().status == 401
    lines = [entry for entry in live_server_process.log_lines() if entry.get("request_id") == "log-me-1"]
    assert lines and lines[0]["logger"] == "accounts.auth"
    assert {"timestamp", "level", "logger", "message"} <= set(lines[0])


def test_both_versions_serve_openapi_and_docs(client):
    for version in ("v1", "v2"):
        schema = client.get(f"/api/{version}/openapi.json")
        assert schema.status_code == 200
        assert schema.json()["openapi"].startswith("3.")
        assert client.get(f"/api/{version}/docs").status_code == 200


def test_every_operation_documents_its_error_responses(client):
    schema = client.get("/api/v2/openapi.json").json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            assert statuses - {"200", "201", "204"}, f"{method.upper()} {path} documents no error response"
            if operation.get("security"):
                assert "401" in statuses, f"{method.upper()} {path} is protected but does not document 401"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_schema_documents_what_every_body_and_anonymous_read_can_get(client, version):
    schema = client.get(f"/api/{version}/openapi.json").json()
    operations = [
        (f"{method.upper()} {path}", op) for path, ops in schema["paths"].items() for method, op in ops.items()
    ]
    for name, operation in operations:
        if "requestBody" in operation:
            # Parsed and size-checked before the operation runs: 400 invalid_json, 413.
            assert {"400", "413"} <= set(operation["responses"]), name
    # One bearer scheme; the reads open to everyone say so with an empty requirement beside it.
    assert [scheme for scheme in schema["components"]["securitySchemes"] if "JWT" in scheme] == ["JWTAuth"]
    open_reads = {name: operation["security"] for name, operation in operations if {} in operation.get("security", [])}
    assert f"GET /api/{version}/posts/{{post_id}}" in open_reads
    assert all(security == [{"JWTAuth": []}, {"PasswordGrant": []}, {}] for security in open_reads.values())
    anonymous = client.get(f"/api/{version}/posts{'/' if version == 'v1' else ''}")
    assert anonymous.status_code == 200


def test_the_schema_states_the_server_s_own_rules(client):
    components = client.get("/api/v1/openapi.json").json()["components"]["schemas"]
    assert components["RegisterIn"]["properties"]["email"]["format"] == "email"
    url = components["WebhookIn"]["properties"]["url"]
    assert url["format"] == "uri" and url["pattern"] == "^https?://"


def test_v1_is_marked_deprecated_with_a_link_to_v2(client):
    response = client.get("/api/v1/users/1")
    assert response["Deprecation"] == "true"
    assert response["Sunset"].endswith("GMT")
    assert response["Link"] == '</api/v2/users/1>; rel="successor-version"'
    assert "Deprecation" not in client.get("/api/v2/users/1")


def test_v1_links_only_to_operations_v2_really_has(client, make_user, bearer):
    author = make_user()
    # A method v1 does not serve at a path has no successor to point at (v2 has no GET /exports either).
    refused = client.get("/api/v1/exports", headers=bearer(author))
    assert refused.status_code == 405
    assert "Link" not in refused
    created = client.post(
        "/api/v1/posts/", {"title": "t", "body": "b"}, content_type="application/json", headers=bearer(author)
    )
    assert created.status_code == 201
    assert created["Link"] == '</api/v2/posts>; rel="successor-version"'
    post_id = created.json()["id"]
    assert client.get(f"/api/v1/posts/{post_id}")["Link"] == f'</api/v2/posts/{post_id}>; rel="successor-version"'


# --- input the database cannot take, paths and queries Django refuses -------------------------------------------


@pytest.mark.parametrize("text", ["a\x00b", "\x00"])
@pytest.mark.parametrize(
    ("method", "path", "field", "authenticated"),
    [
        ("post", "/api/v1/auth/token", "username", False),
        ("post", "/api/v1/auth/token", "password", False),
        ("patch", "/api/v1/users/me", "display_name", True),
        ("post", "/api/v1/chat/rooms", "name", True),
        ("post", "/api/v1/posts/", "title", True),
        ("post", "/api/v1/posts/", "body", True),
    ],
)
def test_text_the_database_cannot_store_is_a_422_naming_its_field(
    client, make_user, bearer, method, path, field, authenticated, text
):
    valid = {
        "/api/v1/auth/token": {"username": "someone", "password": "long enough"},
        "/api/v1/posts/": {"title": "t"},
    }
    body = {**valid.get(path, {}), field: text}
    headers = bearer(make_user()) if authenticated else {}
    response = getattr(client, method)(path, json.dumps(body), content_type="application/json", headers=headers)
    assert response.status_code == 422, response.content
    issue = response.json()["detail"][0]
    assert issue["loc"][-1] == field and issue["type"] == "invalid_text"


@pytest.mark.parametrize("text", ["a\ud800b", "\udfff"])
def test_a_body_with_an_unpaired_surrogate_is_not_json_the_service_reads(client, make_user, bearer, text):
    # json.dumps writes it as its \u escape, which strict UTF-8 parsers (orjson) refuse.
    body = json.dumps({"title": text})
    response = client.post("/api/v1/posts/", body, content_type="application/json", headers=bearer(make_user()))
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_json"


def test_a_search_with_a_nul_is_a_422(client):
    response = client.get("/api/v2/posts", {"search": "a\x00b"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == "search"


# (Not a newline or a tab: urllib, and so the test client, drops them from a URL.)
@pytest.mark.parametrize("character", ["\x00", "\x01", "\x1b", "\x7f"])
def test_control_characters_in_a_path_are_answered(client, make_user, bearer, character):
    response = client.get(f"/api/v1/users/{character}")
    assert response.status_code == 422
    # v1's Link header names the successor with the path percent-encoded (a header cannot carry the character).
    assert response["Link"] == f'</api/v2/users/%{ord(character):02X}>; rel="successor-version"'
    for version in ("v1", "v2"):
        room = client.get(f"/api/{version}/chat/rooms/a{character}b/messages", headers=bearer(make_user()))
        assert room.status_code == 422
        assert room.json()["detail"][0]["loc"][-1] == "slug"


def test_more_query_fields_than_django_parses_is_a_400(client, settings):
    fields = {f"f{i}": "1" for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1)}
    response = client.get("/api/v2/posts", fields)
    assert response.status_code == 400
    assert response.json()["code"] == "too_many_fields"


@pytest.mark.parametrize("path", ["/api/v1/no-such-thing", "/api/v2/users/1"])
def test_every_api_answer_carries_the_security_headers(client, path):
    response = client.get(path)
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"


def test_a_refused_oversized_body_carries_the_security_headers(client, settings):
    response = client.post(REGISTER, "x" * (settings.MAX_REQUEST_BODY_BYTES + 1), content_type="application/json")
    assert response.status_code == 413
    assert response["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_schema_has_no_duplicated_key(client, version):
    """A JSON object may not repeat a key (Swagger UI refuses such a schema): one spelling per response status."""

    def unique(pairs):
        keys = [key for key, _ in pairs]
        assert len(keys) == len(set(keys)), keys
        return dict(pairs)

    json.loads(client.get(f"/api/{version}/openapi.json").content, object_pairs_hook=unique)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_every_link_names_an_operation_of_its_schema(client, version):
    paths = client.get(f"/api/{version}/openapi.json").json()["paths"]
    operations = [operation for methods in paths.values() for operation in methods.values()]
    operation_ids = {operation["operationId"] for operation in operations}
    links = [
        link
        for operation in operations
        for response in operation["responses"].values()
        for link in response.get("links", {}).values()
    ]
    assert len(links) > 5
    assert [link["operationId"] for link in links if link["operationId"] not in operation_ids] == []
