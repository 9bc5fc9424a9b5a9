"""Chat REST endpoints: rooms, message history, and tickets for the WebSocket handshake."""

from typing import Annotated

from asgiref.sync import sync_to_async
from django.conf import settings
from ninja import Field, Path, Query, Router, Schema, Status

from accounts.auth import jwt_auth, session_auth
from chat import selectors, services
from chat.models import MAX_SLUG_LENGTH
from chat.schemas import MessagePage, RoomIn, RoomOut, TicketOut
from core.params import MAX_OBJECT_ID
from core.schemas import INVALID, UNAUTHENTICATED, ErrorOut

# API clients use bearer tokens; the browser page uses its Django session (with CSRF protection on writes).
chat_router = Router(tags=["chat"], auth=[jwt_auth, session_auth])

MessageId = Annotated[int, Field(ge=0, le=MAX_OBJECT_ID)]
# What services.room_slug makes: letters and digits of any script ("\w" is Unicode-aware here), '-' and '_'.
RoomSlug = Annotated[
    str,
    Path(
        pattern=r"^[-\w]+$",
        max_length=MAX_SLUG_LENGTH,
        description="The room's slug: letters and digits of any script, '-' and '_'.",
    ),
]


class HistoryParams(Schema):
    before: MessageId | None = None
    after: MessageId | None = None
    limit: int = Field(50, ge=1, le=100)


@chat_router.get("/rooms", response={200: list[RoomOut], **UNAUTHENTICATED}, summary="Every room")
async def list_rooms(request):
    return await selectors.room_list()


@chat_router.post(
    "/rooms", response={201: RoomOut, **UNAUTHENTICATED, 409: ErrorOut, **INVALID}, summary="Create a room"
)
async def create_room(request, payload: RoomIn):
    room = await sync_to_async(services.room_create)(name=payload.name, user=request.auth)
    return Status(201, room)


@chat_router.get(
    "/rooms/{slug}/messages",
    response={200: MessagePage, **UNAUTHENTICATED, 404: ErrorOut, **INVALID},
    summary="A window of a room's history, oldest first",
)
async def room_messages(request, slug: RoomSlug, params: Query[HistoryParams]):
    room = await selectors.room_get(slug=slug)
    return await selectors.message_history(room=room, before=params.before, after=params.after, limit=params.limit)


@chat_router.post(
    "/tickets", response={200: TicketOut, **UNAUTHENTICATED}, summary="A single-use ticket for the WebSocket"
)
async def create_ticket(request):
    ticket = await services.ticket_issue(user=request.auth)
    return {"ticket": ticket, "expires_in": settings.CHAT_TICKET_TTL_SECONDS}
