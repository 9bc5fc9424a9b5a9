from datetime import datetime
from typing import Annotated
from uuid import UUID

from ninja import Field, Schema

from core.schemas import StrictSchema


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


def message_event(message) -> dict:
    """The `message` event every socket in the room receives, JSON-ready (the same shape as the REST API's)."""
    return {"type": "message", **MessageOut.from_orm(message).model_dump(mode="json")}
