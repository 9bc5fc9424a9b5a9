"""The contract's error body, `{"detail": ..., "code": ...}`, and the exception services raise to produce it."""

from http import HTTPStatus

import orjson
from django.http import HttpResponse

# The machine code a bare HTTP status maps to when nothing more specific was said.
STATUS_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}


def code_for_status(status: int) -> str:
    return STATUS_CODES.get(status, HTTPStatus(status).phrase.lower().replace(" ", "_"))


class ServiceError(Exception):
    """A refusal a client should see: carries the HTTP status, a stable machine code and a human message."""

    status = 400

    def __init__(
        self, detail, *, code: str | None = None, status: int | None = None, headers=None, extra=None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        self.code = code or code_for_status(self.status)
        self.headers = dict(headers or {})
        # Further body fields beside detail and code (e.g. retry_after).
        self.extra = dict(extra or {})


class NotAuthenticated(ServiceError):
    status = 401

    def __init__(self, detail: str = "Authentication credentials were not provided or are invalid.", **kwargs):
        super().__init__(detail, **kwargs)
        self.headers.setdefault("WWW-Authenticate", "Bearer")


class PermissionDenied(ServiceError):
    status = 403


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


class ServiceUnavailable(ServiceError):
    status = 503


class RateLimited(ServiceError):
    status = 429

    def __init__(self, retry_after: int, detail: str = "Too many requests; try again later.", **kwargs):
        retry_after = max(int(retry_after), 1)
        super().__init__(
            detail, headers={"Retry-After": str(retry_after)}, extra={"retry_after": retry_after}, **kwargs
        )


class InvalidInput(ServiceError):
    """Input that passed the schema but not a domain rule, reported in the shape of a validation error."""

    status = 422

    def __init__(self, *, loc: list, msg: str, type: str):
        super().__init__([{"loc": loc, "msg": msg, "type": type}], code="validation_error")


def error_body(status: int, detail, code: str | None = None, **extra) -> dict:
    return {"detail": detail, "code": code or code_for_status(status), **extra}


def error_response(status: int, detail, code: str | None = None, headers=None, **extra) -> HttpResponse:
    """A contract error response built outside ninja (middleware, plain Django views)."""
    response = HttpResponse(
        orjson.dumps(error_body(status, detail, code, **extra)), status=status, content_type="application/json"
    )
    for name, value in (headers or {}).items():
        response[name] = value
    return response
