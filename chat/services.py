"""Writes of the chat app: rooms, messages (stored before they are announced), WebSocket tickets, notifications."""

import json
import logging
import secrets
import unicodedata
import uuid

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from accounts import selectors as accounts_selectors
from chat import selectors
from chat.models import MAX_SLUG_LENGTH, Message, Room
from chat.presence import Presence, get_presence_registry
from chat.schemas import message_event
from core import events
from core.errors import Conflict, InvalidInput
from core.store import get_store

logger = logging.getLogger(__name__)


def room_slug(name: str) -> str:
    """The room's address: its name's letters and digits, in any script (日本語ルーム, кофе), lowercased, with '-'
    between words. Accents on Latin letters are dropped, as ASCII slugs always had it (Café Talk -> cafe-talk)."""
    kept = []
    for char in unicodedata.normalize("NFKD", name):
        if unicodedata.combining(char) and kept and kept[-1].isascii():
            continue
        kept.append(char)
    return slugify(unicodedata.normalize("NFC", "".join(kept)), allow_unicode=True)[:MAX_SLUG_LENGTH].strip("-_")


def room_create(*, name: str, user) -> Room:
    name = name.strip()
    slug = room_slug(name)
    if not slug:
        raise InvalidInput(
            loc=["body", "name"], msg="The name needs at least one letter or digit.", type="value_error"
        )
    try:
        with transaction.atomic():
            return Room.objects.create(slug=slug, name=name, created_by=user)
    except IntegrityError:
        raise Conflict(f"A room with the address {slug!r} already exists.", code="room_exists") from None


def message_send(*, room: Room, user, text: str, client_id: uuid.UUID) -> tuple[Message, bool]:
    """Store a message once per (user, client_id) and broadcast it after commit.

    Returns (message, created). A resend of the same client_id returns the stored message, and is neither
    stored nor broadcast again: the sender only missed our ack.
    """
    existing = Message.objects.select_related("user", "room").filter(user=user, client_id=client_id).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            message = Message.objects.create(room=room, user=user, text=text, client_id=client_id)
            # Encoded once here rather than once per receiving socket: a room of 500 shares one JSON text.
            payload = {"type": "chat.message", "id": message.pk, "frame": json.dumps(message_event(message))}
            events.publish_on_commit(events.room_group(room.pk), payload)
    except IntegrityError:
        # The same client_id raced in through another connection of the same user: theirs was stored.
        return Message.objects.select_related("user", "room").get(user=user, client_id=client_id), False
    return message, True


async def ticket_issue(*, user) -> str:
    ticket = secrets.token_urlsafe(32)
    # The user's token generation goes with it: a password change or "log out everywhere" in between voids it, as
    # it voids the user's access tokens.
    value = f"{user.pk}:{user.token_generation}"
    await get_store().set(f"ws-ticket:{ticket}", value, ttl=settings.CHAT_TICKET_TTL_SECONDS)
    return ticket


async def ticket_user(*, ticket: str):
    """The active user a ticket was issued to, once; None for a ticket unknown, used, expired, or issued before
    the user's password changed (or they were logged out everywhere)."""
    redeemed = await ticket_redeem(ticket=ticket)
    if redeemed is None:
        return None
    user_id, generation = redeemed
    user = await accounts_selectors.user_active_or_none(user_id=user_id)
    if user is None or (generation is not None and user.token_generation != generation):
        return None
    return user


async def ticket_redeem(*, ticket: str) -> tuple[int, int | None] | None:
    """(user id, token generation) the ticket was issued for, once: the read and the delete are one atomic step.
    The generation is None for a ticket issued before generations were recorded in them."""
    if not ticket or len(ticket) > 128:
        return None
    value = await get_store().take(f"ws-ticket:{ticket}")
    if not value:
        return None
    user_id, _, generation = value.partition(":")
    return int(user_id), int(generation) if generation else None


# --- a socket's place in a room ---------------------------------------------------------------------------


class RoomMembership:
    """One socket in one room: its channel in the room's group and the user's presence, across processes.

    `join` then `announce_join` when the socket opens (the consumer sends the welcome and the backlog in between,
    so a client hears of itself last), `beat` every CHAT_HEARTBEAT_SECONDS, `leave` exactly once at the end.
    """

    def __init__(self, *, room: Room, user, channel_name: str, channel_layer):
        self.room = room
        self.user = user
        self.channel_name = channel_name
        self.layer = channel_layer
        self.group = events.room_group(room.pk)
        self.presence = Presence(room.pk, user.pk, user.username, channel_name)
        self.first_connection = False

    def user_summary(self) -> dict:
        return {"id": self.user.pk, "username": self.user.username}

    async def join(self) -> dict:
        """Into the group and the room's presence; returns the `welcome` frame."""
        # The group before the backlog is read: a message committed in between arrives live (and is skipped there
        # when the backlog already held it: ids only grow).
        await self.layer.group_add(self.group, self.channel_name)
        registry = get_presence_registry()
        self.first_connection = await registry.join(self.presence)
        return {
            "type": "welcome",
            "room": {"slug": self.room.slug, "name": self.room.name},
            "user": self.user_summary(),
            "online": await registry.online(self.room.pk),
            "last_id": await selectors.last_message_id(room_id=self.room.pk),
        }

    async def announce_join(self) -> None:
        """Tell the room the user came online, unless another of their sockets already had."""
        if self.first_connection:
            await self._presence_event("join", self.user_summary())

    async def beat(self) -> None:
        """Keep this socket's presence alive and its group membership (groups expire), and announce the users whose
        every socket stopped beating (their server process died)."""
        registry = get_presence_registry()
        await registry.heartbeat(self.presence)
        await self.layer.group_add(self.group, self.channel_name)
        for user in await registry.sweep(self.room.pk):
            await self._presence_event("leave", user)

    async def typing(self) -> None:
        """The others in the room see the user typing (the sender's own sockets are skipped by channel)."""
        await self.layer.group_send(
            self.group, {"type": "chat.typing", "user": self.user_summary(), "sender": self.channel_name}
        )

    async def leave(self) -> None:
        await self.layer.group_discard(self.group, self.channel_name)
        if await get_presence_registry().leave(self.presence):
            await self._presence_event("leave", self.user_summary())

    async def _presence_event(self, event: str, user: dict) -> None:
        await self.layer.group_send(self.group, {"type": "chat.presence", "event": event, "user": user})
