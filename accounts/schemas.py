from datetime import datetime
from typing import Annotated, Literal

from django.contrib.auth.models import BaseUserManager
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from ninja import Field, Schema
from pydantic import AfterValidator

from core.schemas import StrictSchema

# Generous, but bounded: hashing an unbounded password is a cheap way to burn our CPU.
MAX_PASSWORD_LENGTH = 1024


def _valid_email(value: str) -> str:
    value = value.strip()
    try:
        validate_email(value)
    except DjangoValidationError:
        raise ValueError("Enter a valid email address.") from None
    return BaseUserManager.normalize_email(value)


# The schema states the rule the validator applies (Django's validate_email), so clients can check before sending.
Email = Annotated[str, Field(max_length=254, json_schema_extra={"format": "email"}), AfterValidator(_valid_email)]
Username = Annotated[str, Field(min_length=1, max_length=150, pattern=r"^[\w.@+-]+$")]
Password = Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)]
# A password being set. Django's validators (AUTH_PASSWORD_VALIDATORS) decide, with their own messages; the schema
# states the part of their rules a schema can: MinimumLengthValidator's 8 characters, NumericPasswordValidator's
# "not only digits" (a pattern matches anywhere: one non-digit).
NewPassword = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_PASSWORD_LENGTH,
        description="At least 8 characters, not only digits, not a common password, not too like the username or "
        "email (Django's password validators).",
        json_schema_extra={"minLength": 8, "pattern": r"\D"},
    ),
]
JWT = Annotated[str, Field(min_length=1, max_length=4096)]


class RegisterIn(StrictSchema):
    username: Username
    email: Email
    password: NewPassword


class TokenIn(StrictSchema):
    username: Annotated[str, Field(min_length=1, max_length=254)]
    password: Password


class PasswordGrantIn(StrictSchema):
    """OAuth 2.0's password grant (RFC 6749, 4.3) as a form, what the API docs' Authorize dialog sends. Other form
    fields it may add (client_id, scope) are ignored: there are no clients or scopes here."""

    grant_type: Literal["password"]
    username: Annotated[str, Field(min_length=1, max_length=254)]
    password: Password


class RefreshIn(StrictSchema):
    refresh_token: JWT


class LogoutIn(StrictSchema):
    refresh_token: JWT


class PasswordChangeIn(StrictSchema):
    current_password: Password
    new_password: NewPassword


class UserPatchIn(StrictSchema):
    email: Email | None = None
    display_name: Annotated[str, Field(max_length=150)] | None = None


class TokenPairOut(Schema):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int


class UserOut(Schema):
    id: int
    username: str
    email: str
    display_name: str
    is_staff: bool
    date_joined: datetime


class UserPublic(Schema):
    id: int
    username: str
    display_name: str
    date_joined: datetime
