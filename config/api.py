"""The two API versions and the handlers that turn every failure into the contract's error body."""

import contextlib
import functools
import logging
import re
from datetime import UTC, datetime
from email.utils import format_datetime

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpResponsePermanentRedirect
from django.http.multipartparser import MultiPartParserError
from django.urls import path
from django.utils.encoding import escape_uri_path, iri_to_uri
from django.views.decorators.csrf import csrf_exempt
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, AuthorizationError, HttpError, ValidationError

from accounts import tokens
from accounts.api import (
    auth_router,
    obtain_token,
    obtain_token_by_form,
    password_grant_router,
    refresh_token,
    register,
    users_router,
    users_v1_router,
    users_v2_router,
)
from accounts.auth import BrowserSessionAuth, JWTAuth, OptionalJWTAuth, verified_access_claims
from chat.api import chat_router
from core import ratelimit
from core.database import is_server_gone, outage
from core.errors import ServiceError, code_for_status, error_body
from core.logging import request_id_var
from core.net import client_ip
from core.paths import API_V1, API_V1_NAMESPACE, API_V2, API_V2_NAMESPACE
from core.renderers import ORJSONParser, ORJSONRenderer
from core.schemas import ErrorOut, RateLimitedOut
from fastpath.responses import fast_bodies
from jobs.api import exports_router, jobs_list_router, jobs_router
from posts.api import authors_router, authors_v2_router, posts_router, posts_v2_router
from webhooks.api import webhooks_router, webhooks_v1_router, webhooks_v2_router

logger = logging.getLogger("api")

# Keys of a pydantic error a client may see; `input` could echo a password and `ctx` may not serialize.
_VALIDATION_ISSUE_KEYS = ("loc", "msg", "type")
# Every operation names its body parameter so (tests/test_api_errors.py checks it); ninja puts that name in `loc`.
BODY_PARAMETER = "payload"


def _contract_issue(issue: dict) -> dict:
    """A pydantic issue as the contract writes it: `loc` is ["body" | "query" | "path", <field>, ...] everywhere,
    ninja's ["body", "payload", "email"] included."""
    found = {key: issue.get(key) for key in _VALIDATION_ISSUE_KEYS}
    loc = list(found["loc"] or ())
    if loc[:1] == ["form"]:
        # A form is the request's body too.
        loc[0] = "body"
    if loc[:2] == ["body", BODY_PARAMETER]:
        loc = ["body", *loc[2:]]
    found["loc"] = loc
    return found


def _respond(api: NinjaAPI, request, status: int, body: dict, headers: dict | None = None):
    response = api.create_response(request, body, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def install_error_handlers(api: NinjaAPI) -> None:
    def service_error(request, exc: ServiceError):
        body = error_body(exc.status, exc.detail, exc.code, **exc.extra)
        return _respond(api, request, exc.status, body, exc.headers)

    def validation_error(request, exc: ValidationError):
        issues = [_contract_issue(issue) for issue in exc.errors]
        return _respond(api, request, 422, error_body(422, issues, "validation_error"))

    def authentication_error(request, exc: AuthenticationError):
        body = error_body(401, "Authentication credentials were not provided or are invalid.")
        return _respond(api, request, 401, body, {"WWW-Authenticate": "Bearer"})

    def authorization_error(request, exc: AuthorizationError):
        return _respond(api, request, 403, error_body(403, "You do not have permission to do this."))

    def http_error(request, exc: HttpError):
        # ninja raises HttpError(400) itself for a body that is not valid JSON.
        code = "invalid_json" if exc.status_code == 400 else code_for_status(exc.status_code)
        return _respond(api, request, exc.status_code, error_body(exc.status_code, str(exc), code))

    def not_found(request, exc: Http404):
        return _respond(api, request, 404, error_body(404, "Not found."))

    def body_too_large(request, exc: RequestDataTooBig):
        return _respond(api, request, 413, error_body(413, "Request body is too large."))

    def unreadable_form(request, exc: MultiPartParserError):
        # A multipart body Django cannot split (no boundary, a truncated part) where a form is read.
        return _respond(api, request, 400, error_body(400, "The form body cannot be read.", "invalid_form"))

    def too_many_fields(request, exc: TooManyFieldsSent | TooManyFilesSent):
        # More query or form fields than DATA_UPLOAD_MAX_NUMBER_FIELDS (files: _FILES): Django refuses to parse them.
        return _respond(api, request, 400, error_body(400, str(exc), "too_many_fields"))

    def database_unavailable(request, exc: OperationalError | InterfaceError):
        # An outage is logged once, by the tracker, however many requests it fails; a query's own failure (a
        # timeout, a deadlock) is logged here, with its request.
        outage.failed(exc)
        if is_server_gone(exc):
            detail = "The database is unavailable; try again shortly."
        else:
            logger.warning("database error in %s %s: %s", request.method, request.path, exc)
            detail = "The database could not complete the request; try again shortly."
        headers = {"Retry-After": str(settings.DB_OUTAGE_PROBE_SECONDS)}
        return _respond(api, request, 503, error_body(503, detail, "database_unavailable"), headers)

    def unexpected(request, exc: Exception):
        request_id = request_id_var.get()
        logger.exception("unhandled error in %s %s", request.method, request.path)
        body = error_body(500, "Internal server error.", request_id=request_id)
        return _respond(api, request, 500, body)

    api.add_exception_handler(Exception, unexpected)
    api.add_exception_handler(OperationalError, database_unavailable)
    api.add_exception_handler(InterfaceError, database_unavailable)
    api.add_exception_handler(RequestDataTooBig, body_too_large)
    api.add_exception_handler(TooManyFieldsSent, too_many_fields)
    api.add_exception_handler(MultiPartParserError, unreadable_form)
    api.add_exception_handler(TooManyFilesSent, too_many_fields)
    api.add_exception_handler(Http404, not_found)
    api.add_exception_handler(HttpError, http_error)
    api.add_exception_handler(AuthorizationError, authorization_error)
    api.add_exception_handler(AuthenticationError, authentication_error)
    api.add_exception_handler(ValidationError, validation_error)
    api.add_exception_handler(ServiceError, service_error)


class ContractNinjaAPI(NinjaAPI):
    """The API as its OpenAPI schema should tell it: what every operation can answer besides what it declares.

    `one_spelling`: every path is served without a trailing slash, and the other spelling answers 308 to it (the
    method and body are kept), whichever way the routers write it.
    `password_grant_url`: where the docs' Authorize dialog logs in with a username and password (OAuth 2.0's
    password flow), offered beside the bearer token wherever one is accepted.
    """

    def __init__(self, *args, one_spelling: bool = False, password_grant_url: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.one_spelling = one_spelling
        self.password_grant_url = password_grant_url

    @property
    def urls(self):
        patterns, app_name, namespace = super().urls
        return (_without_trailing_slash(patterns) if self.one_spelling else patterns), app_name, namespace

    def get_openapi_schema(self, *, path_prefix=None, path_params=None):
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        if self.one_spelling:
            schema["paths"] = {_bare(route): operations for route, operations in schema["paths"].items()}
        error = {"$ref": "#/components/schemas/ErrorOut"}
        schemes = schema.get("components", {}).get("securitySchemes", {})
        optional = schemes.pop(OptionalJWTAuth.__name__, None)
        if optional is not None:
            schemes.setdefault(JWTAuth.__name__, optional)
        # The chat page's session cookie is the browser page's own credential, not one an API client holds: the
        # operations still accept it (chat/api.py), the docs offer only the bearer token.
        schemes.pop(BrowserSessionAuth.__name__, None)
        if self.password_grant_url:
            schemes[_PASSWORD_GRANT] = {
                "type": "oauth2",
                "description": "Your username and password, exchanged for a bearer token.",
                "flows": {"password": {"tokenUrl": self.password_grant_url, "scopes": {}}},
            }
        for route, operations in schema["paths"].items():
            for method, operation in operations.items():
                # One spelling of each status: ninja writes them as integers, an operation's openapi_extra may not,
                # and JSON would hold both as one duplicated key.
                responses = operation["responses"] = {
                    str(status): response for status, response in operation.get("responses", {}).items()
                }
                if "requestBody" in operation:
                    # Every body is parsed and its size checked before the operation runs (install_error_handlers,
                    # core/middleware.py).
                    for status, description in (
                        ("400", "The body cannot be read (not JSON)"),
                        ("413", "The body is too large"),
                    ):
                        responses.setdefault(
                            status, {"description": description, "content": {"application/json": {"schema": error}}}
                        )
                _link_what_it_returns(schema, route, method, operation)
                if "security" in operation:
                    operation["security"] = self._security(operation["security"])
        return schema

    def _security(self, requirements: list[dict]) -> list[dict]:
        names = {name for requirement in requirements for name in requirement}
        if not names & {JWTAuth.__name__, OptionalJWTAuth.__name__}:
            return requirements
        bearer = [{JWTAuth.__name__: []}]
        if self.password_grant_url:
            bearer.append({_PASSWORD_GRANT: []})
        # The optional-auth reads: the same bearer token, or none (an anonymous caller is served too).
        return [*bearer, {}] if OptionalJWTAuth.__name__ in names else bearer


_PASSWORD_GRANT = "PasswordGrant"


def _link_what_it_returns(schema: dict, route: str, method: str, operation: dict) -> None:
    """OpenAPI links (what a client, or Schemathesis' stateful phase, can call next with what an answer holds):
    from an object with an `id` to the operations on it (POST /posts -> GET /posts/{post_id}, ...), from a list to
    its first item's, and from a cursor page to its next page."""
    for status, response in operation["responses"].items():
        body = _response_body_schema(schema, response)
        if not str(status).startswith("2") or body is None:
            continue
        fields = body.get("properties", {})
        links = {}
        if "next_cursor" in fields:
            parameters = {"cursor": "$response.body#/next_cursor"}
            parameters.update({name: f"$request.path.{name}" for name in _PATH_TEMPLATE.findall(route)})
            links["next_page"] = {"operationId": operation["operationId"], "parameters": parameters}
        source = None
        if "id" in fields and method == "post":
            source = "$response.body#/id"
        elif "items" in fields and method == "get":
            source = "$response.body#/items/0/id"
        for target_route, target_operations in schema["paths"].items() if source else ():
            if parameter := _item_parameter(route, target_route):
                for target in target_operations.values():
                    operation_id = target["operationId"]
                    links[operation_id] = {"operationId": operation_id, "parameters": {parameter: source}}
        if links:
            response.setdefault("links", {}).update(links)


def _item_parameter(route: str, target_route: str) -> str | None:
    """ "post_id" for ("/posts", "/posts/{post_id}") or ("/webhooks", "/webhooks/{webhook_id}/deliveries")."""
    rest = target_route.removeprefix(route + "/")
    if rest == target_route or not rest.startswith("{"):
        return None
    parameters = _PATH_TEMPLATE.findall(rest)
    return parameters[0] if len(parameters) == 1 and rest.startswith(f"{{{parameters[0]}}}") else None


def _response_body_schema(schema: dict, response: dict) -> dict | None:
    body = response.get("content", {}).get("application/json", {}).get("schema")
    if body and "$ref" in body:
        body = schema["components"]["schemas"].get(body["$ref"].rsplit("/", 1)[-1])
    return body if body and body.get("type") == "object" else None


_PATH_TEMPLATE = re.compile(r"{(\w+)}")


def _bare(route: str) -> str:
    return route.rstrip("/") or route


def _without_trailing_slash(patterns: list) -> list:
    """The API's URL patterns, each route once without its trailing slash, then one 308 pattern per route for the
    other spelling. ninja yields a pattern per operation: the first of a route is the one Django resolves to."""
    served, redirects, routes = [], [], set()
    for pattern in patterns:
        route = str(pattern.pattern)
        bare = _bare(route)
        served.append(path(bare, pattern.callback, name=pattern.name))
        if bare and bare not in routes:
            routes.add(bare)
            redirects.append(path(f"{bare}/", _to_spelling_without_slash))
    return served + redirects


@csrf_exempt  # it only points elsewhere; the operation there checks what it must
async def _to_spelling_without_slash(request, **path_parameters):
    # Percent-encoded: a Location header cannot carry the control characters a path or query may decode to.
    location = escape_uri_path(request.path.removesuffix("/"))
    if query := request.META.get("QUERY_STRING"):
        location += "?" + iri_to_uri(query)
    return HttpResponsePermanentRedirect(location, preserve_request=True)


class DeprecatedNinjaAPI(ContractNinjaAPI):
    """An API version still served but superseded: every response says so (RFC 8594 Sunset, RFC 8288 Link)."""

    def __init__(self, *args, prefix: str, successor: NinjaAPI, successor_prefix: str, sunset: datetime, **kwargs):
        super().__init__(*args, **kwargs)
        self.prefix = prefix
        self.successor = successor
        self.successor_prefix = successor_prefix
        self.sunset_header = format_datetime(sunset, usegmt=True)
        self._successor_operations: frozenset[tuple[str, str]] | None = None
        self._successor_serves: dict[tuple[str, str], bool] = {}

    def create_response(self, request, *args, **kwargs):
        return self._announce(request, super().create_response(request, *args, **kwargs))

    def create_temporal_response(self, request):
        # Bodiless answers (204, 304) are this response itself, never passing through create_response.
        return self._announce(request, super().create_temporal_response(request))

    def _announce(self, request, response):
        response["Deprecation"] = "true"
        response["Sunset"] = self.sunset_header
        successor_path = self._successor_path(request)
        if successor_path:
            response["Link"] = f'<{successor_path}>; rel="successor-version"'
        return response

    def _successor_path(self, request) -> str | None:
        """The same operation in the successor version (same path template and method), if it has one."""
        if not request.path.startswith(self.prefix) or request.resolver_match is None:
            return None
        key = (request.resolver_match.route, request.method)
        served = self._successor_serves.get(key)
        if served is None:
            # Once per route and method (bounded by the URLconf), not per request.
            template = self.successor_prefix + _PATH_PARAMETER.sub(r"{\1}", key[0]).removeprefix(
                self.prefix.lstrip("/")
            )
            method = "get" if request.method == "HEAD" else request.method.lower()
            served = self._successor_serves[key] = (_bare(template), method) in self._successor_operation_set()
        if not served:
            return None
        # The path as a URI (percent-encoded): a header value cannot carry the control characters a path may decode to.
        return _bare(self.successor_prefix + escape_uri_path(request.path.removeprefix(self.prefix)))

    def _successor_operation_set(self) -> frozenset[tuple[str, str]]:
        # Read once from the successor's own schema: (path template, method) of every operation it serves.
        if self._successor_operations is None:
            paths = self.successor.get_openapi_schema(path_prefix=self.successor_prefix)["paths"]
            self._successor_operations = frozenset(
                (path, method) for path, operations in paths.items() for method in operations
            )
        return self._successor_operations


# "users/<user_id>" or "posts/<int:post_id>" -> "users/{user_id}", as OpenAPI writes path templates.
_PATH_PARAMETER = re.compile(r"<(?:\w+:)?(\w+)>")


# --- rate limits: every operation of both versions ----------------------------------------------------------

# Unauthenticated entry points where a flood is an attack on credentials: without Redis they refuse (503) rather
# than fall back to per-process limits.
_AUTH_VIEWS = {register, obtain_token, obtain_token_by_form, refresh_token}
_READ_METHODS = {"GET", "HEAD", "OPTIONS"}


def _policy_name(operation) -> str:
    if operation.view_func in _AUTH_VIEWS:
        return "auth"
    return "read" if set(operation.methods) <= _READ_METHODS else "write"


def _rate_limit_identity(request) -> str:
    """The caller's user id when it presents a valid access token, else its address. Only the signature is checked
    here (microseconds, no I/O): the operation's own authentication still decides whether the token is accepted."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    user_id = None
    if scheme.lower() == "bearer" and token.strip():
        with contextlib.suppress(tokens.InvalidToken):
            user_id = verified_access_claims(request, token.strip())["sub"]
    return ratelimit.client_identity(client_ip(request), user_id)


def _rate_limited(run):
    """Wraps an operation's `run` (ninja's "view" decorator mode: before authentication and input parsing, so
    invalid requests count too) and documents the answers the limiter adds in the operation's schema."""
    operation = run.__self__
    if not operation.is_async:
        raise TypeError(f"{operation.view_func.__name__}: API operations must be async to be rate limited")
    policy_name = _policy_name(operation)
    operation.response_models.setdefault(429, operation._create_response_model(RateLimitedOut))
    # 503: the database is unavailable (any operation), or the limiter itself is, for fail-closed policies.
    operation.response_models.setdefault(503, operation._create_response_model(ErrorOut))

    @functools.wraps(run)
    async def limited_run(request, *args, **kwargs):
        try:
            decision = await ratelimit.check(policy_name, _rate_limit_identity(request))
        except Exception as exc:
            # 429, 503, or a bug: answered by the API's own handlers like any failure inside the operation.
            return operation.api.on_exception(request, exc)
        response = await run(request, *args, **kwargs)
        for name, value in decision.headers().items():
            response[name] = value
        return response

    return limited_run


def _configure(api: NinjaAPI, routers: list) -> NinjaAPI:
    install_error_handlers(api)
    # fast_bodies first: it needs the operation's own bound `run` (and returns it as it is).
    api.add_decorator(fast_bodies, mode="view")
    api.add_decorator(_rate_limited, mode="view")
    for prefix, router in routers:
        api.add_router(prefix, router)
    return api


# Routers that serve both versions alike, mounted on each; the version's own routers beside them.
_SHARED = [
    ("/auth", auth_router),
    ("/users", users_router),
    ("/chat", chat_router),
    ("/exports", exports_router),
    ("/jobs", jobs_router),
    ("/webhooks", webhooks_router),
]


# The docs of both versions log in here: tokens are the same in both.
PASSWORD_GRANT_URL = f"{API_V2}/auth/password-grant"

_COMMON = {
    "title": "Backend API",
    "docs_url": "/docs",
    "openapi_url": "/openapi.json",
    "renderer": ORJSONRenderer(),
    "parser": ORJSONParser(),
}

api_v2 = _configure(
    ContractNinjaAPI(
        version="2.0",
        description="Current version.",
        urls_namespace=API_V2_NAMESPACE,
        one_spelling=True,
        password_grant_url=PASSWORD_GRANT_URL,
        **_COMMON,
    ),
    [
        *_SHARED,
        ("/auth", password_grant_router),
        ("/users", users_v2_router),
        ("/posts", posts_v2_router),
        ("/authors", authors_v2_router),
        ("/jobs", jobs_list_router),
        ("/webhooks", webhooks_v2_router),
    ],
)
api_v1 = _configure(
    DeprecatedNinjaAPI(
        version="1.0",
        description="Legacy version, still served until its Sunset date. See v2 for the current one.",
        urls_namespace=API_V1_NAMESPACE,
        prefix=f"{API_V1}/",
        successor=api_v2,
        successor_prefix=f"{API_V2}/",
        password_grant_url=PASSWORD_GRANT_URL,
        sunset=datetime.combine(settings.API_V1_SUNSET, datetime.max.time(), tzinfo=UTC).replace(microsecond=0),
        **_COMMON,
    ),
    [
        *_SHARED,
        ("/users", users_v1_router),
        ("/posts", posts_router),
        ("/authors", authors_router),
        ("/webhooks", webhooks_v1_router),
    ],
)
