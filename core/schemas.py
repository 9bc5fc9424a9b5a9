"""The base of every request body schema, and response schemas for the contract's error bodies, so every operation
can document its non-2xx answers."""

import re
from typing import Any

from ninja import Schema
from pydantic import ConfigDict, field_validator
from pydantic_core import PydanticCustomError

# PostgreSQL's text cannot hold NUL, and a lone surrogate has no UTF-8 encoding: either would fail in the database
# (a 500) instead of being refused as input.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
UNSTORABLE_TEXT_MESSAGE = "Must not contain NUL characters or unpaired surrogates."


def holds_unstorable_text(value) -> bool:
    """Whether a string in `value` (nested in lists and dicts, keys included, however deep) holds a NUL or a lone
    surrogate."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return False


def refuse_unstorable_text(value):
    """`value`, unless it holds text the database cannot store: then a validation error of its field."""
    if holds_unstorable_text(value):
        raise PydanticCustomError("invalid_text", UNSTORABLE_TEXT_MESSAGE)
    return value


class StrictSchema(Schema):
    """A request body: unknown fields are refused rather than silently ignored (a typo in a PATCH must not look like
    success), and so is text the database cannot store, in every field."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _storable_text(cls, value):
        return refuse_unstorable_text(value)


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
