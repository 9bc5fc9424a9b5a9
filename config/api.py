"""The two API versions and the handlers that turn every failure into the contract's error body."""

import logging

from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, AuthorizationError, HttpError, ValidationError

from core.errors import ServiceError, code_for_status, error_body
from core.logging import request_id_var
from core.renderers import ORJSONParser, ORJSONRenderer

logger = logging.getLogger("api")

# Keys of a pydantic error a client may see; `input` could echo a password and `ctx` may not serialize.
_VALIDATION_ISSUE_KEYS = ("loc", "msg", "type")


def _respond(api: NinjaAPI, request, status: int, body: dict, headers: dict | None = None):
    response = api.create_response(request, body, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _install_error_handlers(api: NinjaAPI) -> None:
    def service_error(request, exc: ServiceError):
        return _respond(api, request, exc.status, error_body(exc.status, exc.detail, exc.code), exc.headers)

    def validation_error(request, exc: ValidationError):
        issues = [{key: issue.get(key) for key in _VALIDATION_ISSUE_KEYS} for issue in exc.errors]
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

    def unexpected(request, exc: Exception):
        request_id = request_id_var.get()
        logger.exception("unhandled error in %s %s", request.method, request.path)
        body = error_body(500, "Internal server error.", request_id=request_id)
        return _respond(api, request, 500, body)

    api.add_exception_handler(Exception, unexpected)
    api.add_exception_handler(RequestDataTooBig, body_too_large)
    api.add_exception_handler(Http404, not_found)
    api.add_exception_handler(HttpError, http_error)
    api.add_exception_handler(AuthorizationError, authorization_error)
    api.add_exception_handler(AuthenticationError, authentication_error)
    api.add_exception_handler(ValidationError, validation_error)
    api.add_exception_handler(ServiceError, service_error)


def _build_api(version: str, description: str) -> NinjaAPI:
    api = NinjaAPI(
        title="Backend API",
        version=f"{version}.0",
        description=description,
        urls_namespace=f"api-{version}",
        docs_url="/docs",
        openapi_url="/openapi.json",
        renderer=ORJSONRenderer(),
        parser=ORJSONParser(),
    )
    _install_error_handlers(api)
    return api


api_v1 = _build_api("1", "Legacy version, still served. See v2 for the current one.")
api_v2 = _build_api("2", "Current version.")
