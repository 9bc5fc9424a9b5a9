"""Reads of the chat app; everything returned is evaluated."""

from chat.models import Message, Room
from core.errors import NotFound

BACKFILL_CHUNK = 500


async def room_list() -> list[Room]:
    return [room async for room in Room.objects.order_by("name")]


async def room_get(*, slug: str) -> Room:
    room = await room_or_none(slug=slug)
    if room is None:
        raise NotFound("No such room.")
    return room


async def room_or_none(*, slug: str) -> Room | None:
    return await Room.objects.filter(slug=slug).afirst()


async def last_message_id(*, room_id: int) -> int:
    """The room's newest message id, 0 when it has none."""
    last = await Message.objects.filter(room_id=room_id).order_by("-id").values_list("id", flat=True).afirst()
    return last or 0


async def message_history(*, room: Room, before: int | None, after: int | None, limit: int) -> dict:
    """A window of the room's messages in ascending id order.

    With `after` only: the oldest `limit` messages newer than it (reading forward; `has_more` = newer exist).
    Otherwise: the newest `limit` messages older than `before` (or the newest overall), reading backward
    (`has_more` = older exist). One query: a `limit + 1` probe tells whether there is more.
    """
    messages = Message.objects.filter(room=room).select_related("user", "room")
    if before is not None:
        messages = messages.filter(id__lt=before)
    if after is not None:
        messages = messages.filter(id__gt=after)
    forward = after is not None and before is None
    ordered = messages.order_by("id" if forward else "-id")
    window = [message async for message in ordered[: limit + 1]]
    has_more = len(window) > limit
    window = window[:limit]
    if not forward:
        window.reverse()
    return {"items": window, "has_more": has_more}


async def messages_after(*, room_id: int, after: int):
    """Every message of the room newer than `after`, oldest first, read in chunks (a reconnect's backfill)."""
    while True:
        chunk = [
            message
            async for message in Message.objects.filter(room_id=room_id, id__gt=after)
            .select_related("user", "room")
            .order_by("id")[:BACKFILL_CHUNK]
        ]
        for message in chunk:
            yield message
        if len(chunk) < BACKFILL_CHUNK:
            return
        after = chunk[-1].id
