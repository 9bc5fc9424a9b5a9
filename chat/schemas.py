import json
from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from ninja import Field, Schema
from pydantic import StringConstraints, ValidationError, field_validator

from chat.models import MAX_MESSAGE_LENGTH
from core.schemas import UNSTORABLE_TEXT_MESSAGE, StrictSchema, holds_unstorable_text


class RoomIn(StrictSchema):
    name: Annotated[str, Field(min_length=1, max_length=100)]


class RoomOut(Schema):
    slug: str
    name: str
    created_at: datetime


class AuthorOut(Schema):
    id: int
    username: str


class MessageOut(Schema):
    id: int
    room: str
    user: AuthorOut
    text: str
    client_id: UUID
    created_at: datetime

    @staticmethod
    def resolve_room(message) -> str:
        return message.room.slug


class MessagePage(Schema):
    items: list[MessageOut]
    has_more: bool


class TicketOut(Schema):
    ticket: str
    expires_in: int


# --- client frames --------------------------------------------------------------------------------------------
# Parsed and validated here, like REST bodies; a refusal becomes the socket's `error` frame and the connection stays
# open. Unknown fields are ignored.


class FrameRefused(Exception):
    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def parse_frame(text_data: str | None) -> dict:
    """A client frame as a JSON object with a string `type`, or FrameRefused."""
    if text_data is None:
        raise FrameRefused("invalid_frame", "Send JSON text frames.")
    try:
        content = json.loads(text_data)
    except (ValueError, RecursionError):
        # RecursionError: nested deeper than the interpreter's recursion limit.
        raise FrameRefused("invalid_json", "The frame is not valid JSON.") from None
    if not isinstance(content, dict) or not isinstance(content.get("type"), str):
        raise FrameRefused("invalid_frame", 'Send a JSON object with a "type".')
    if holds_unstorable_text(content):
        raise FrameRefused("invalid_text", UNSTORABLE_TEXT_MESSAGE)
    return content


class MessageIn(Schema):
    type: Literal["message"]
    text: Annotated[str, StringConstraints(max_length=MAX_MESSAGE_LENGTH)]
    # Chosen by the client, so a resend of the same message is recognised (acked once, stored once).
    client_id: UUID

    @field_validator("text")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("blank")
        return text


def message_in(content: dict) -> MessageIn:
    """A `message` frame, or FrameRefused naming what is wrong with it (the text first, then the client_id)."""
    try:
        return MessageIn.model_validate(content)
    except ValidationError as exc:
        issues = {issue["loc"][0]: issue["type"] for issue in exc.errors() if issue["loc"]}
    if issues.get("text") == "string_too_long":
        raise FrameRefused("invalid_message", f"The message text is over {MAX_MESSAGE_LENGTH} characters.")
    if "text" in issues:
        raise FrameRefused("invalid_message", "The message text must be a non-empty string.")
    raise FrameRefused("invalid_client_id", "client_id must be a UUID chosen by the client.")


def message_event(message) -> dict:
    """The `message` event every socket in the room receives, JSON-ready (the same shape as the REST API's)."""
    return {"type": "message", **MessageOut.from_orm(message).model_dump(mode="json")}
