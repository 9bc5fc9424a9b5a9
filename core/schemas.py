"""Response schemas for the contract's error bodies, so every operation can document its non-2xx answers."""

from typing import Any

from ninja import Schema


class ErrorOut(Schema):
    detail: str
    code: str


class ValidationIssue(Schema):
    loc: list[Any]
    msg: str
    type: str


class ValidationErrorOut(Schema):
    detail: list[ValidationIssue]
    code: str = "validation_error"


class RateLimitedOut(ErrorOut):
    retry_after: int


# Non-2xx answers most operations document: spread into `response={...}`.
UNAUTHENTICATED = {401: ErrorOut}
INVALID = {422: ValidationErrorOut}
NOT_FOUND = {404: ErrorOut}
