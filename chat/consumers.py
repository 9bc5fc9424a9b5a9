"""WebSocket consumers: a chat room, and the per-user notification stream."""

import asyncio
import json
import logging
import time
import uuid
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from opentelemetry.trace import SpanKind

from accounts.models import User
from chat import selectors, services
from chat.models import MAX_MESSAGE_LENGTH, Room
from chat.presence import Presence, get_presence_registry
from chat.schemas import message_event
from chat.throttle import TokenBucket
from core import events
from core.logging import request_id_var, user_id_var
from core.metrics import CHAT_MESSAGES_SENT, WEBSOCKET_CONNECTIONS
from core.schemas import UNSTORABLE_TEXT_MESSAGE, holds_unstorable_text
from core.tracing import context_from_headers, span, tracer

logger = logging.getLogger(__name__)

CLOSE_NOT_AUTHENTICATED = 4001
CLOSE_NO_SUCH_ROOM = 4004


class AuthenticatedConsumer(AsyncJsonWebsocketConsumer):
    """Accepts the handshake, then identifies the user by a single-use ticket (`?ticket=`) or, for the
    browser page, the Django session cookie; anyone else is closed with 4001 at once."""

    user: User | None = None
    # The `consumer` label of websocket_connections_open.
    metrics_name = "websocket"
    # Frame types worth naming in a span attribute; anything else a client sends is "other".
    frame_types: frozenset[str] = frozenset()

    def query_param(self, name: str) -> str | None:
        values = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get(name)
        return values[0] if values else None

    async def authenticate(self) -> User | None:
        ticket = self.query_param("ticket")
        if ticket:
            redeemed = await services.ticket_redeem(ticket=ticket)
            if redeemed is None:
                return None
            user_id, generation = redeemed
            user = await User.objects.filter(pk=user_id, is_active=True).afirst()
            if user is None or (generation is not None and user.token_generation != generation):
                return None
            return user
        # Channels' AuthMiddleware has already resolved the session's user (or AnonymousUser).
        session_user = self.scope.get("user")
        if session_user is not None and session_user.is_authenticated and session_user.is_active:
            return session_user._wrapped
        return None

    async def connect(self) -> None:
        # Accept first: a close code (4001, 4004) can only be sent on an open socket.
        await self.accept()
        WEBSOCKET_CONNECTIONS.labels(self.metrics_name).inc()
        self.counted = True
        # Ids for every log line of this connection: it runs as one task, so these stay set until it ends.
        request_id_var.set(uuid.uuid4().hex)
        # A traceparent on the handshake parents the span of every frame handled on this connection.
        self.trace_context = context_from_headers(self.scope.get("headers", []))
        self.user = await self.authenticate()
        if self.user is not None:
            user_id_var.set(self.user.pk)
        if self.user is None:
            await self.close(code=CLOSE_NOT_AUTHENTICATED)
            return
        await self.connected()

    async def connected(self) -> None:
        raise NotImplementedError

    async def release(self) -> None:
        """Undo what `connected` set up (groups, presence, tasks). Runs exactly once per connection."""

    async def __call__(self, scope, receive, send) -> None:
        # Cleanup may not wait for `disconnect`: when a send finds the client already gone, the server raises out
        # of the consumer and no disconnect handler ever runs. Without this the user would stay "online" forever,
        # kept alive by a heartbeat task that outlived its connection.
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Here rather than in a disconnect handler, which a vanished client never triggers.
            if getattr(self, "counted", False):
                WEBSOCKET_CONNECTIONS.labels(self.metrics_name).dec()
            try:
                await self.release()
            except Exception:
                logger.exception("releasing a closed connection failed")

    async def disconnect(self, code) -> None:
        await self.release()

    async def send_error(self, code: str, detail: str, **extra) -> None:
        await self.send_json({"type": "error", "code": code, "detail": detail, **extra})

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        # Bad frames get an error event; the connection stays open.
        if text_data is None:
            await self.send_error("invalid_frame", "Send JSON text frames.")
            return
        try:
            content = json.loads(text_data)
        except (ValueError, RecursionError):
            # RecursionError: nested deeper than the interpreter's recursion limit.
            await self.send_error("invalid_json", "The frame is not valid JSON.")
            return
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            await self.send_error("invalid_frame", 'Send a JSON object with a "type".')
            return
        if holds_unstorable_text(content):
            await self.send_error("invalid_text", UNSTORABLE_TEXT_MESSAGE)
            return
        frame_type = content["type"] if content["type"] in self.frame_types else "other"
        with tracer.start_as_current_span(
            f"websocket receive {frame_type}",
            context=self.trace_context,
            kind=SpanKind.SERVER,
            attributes={"websocket.frame_type": frame_type, "websocket.consumer": self.metrics_name},
        ):
            await self.receive_json(content)

    @classmethod
    async def encode_json(cls, content) -> str:
        return json.dumps(content, separators=(",", ":"))


class ChatConsumer(AuthenticatedConsumer):
    """`/ws/chat/<slug>/?ticket=...&after=<last id seen>`: welcome, backfill, then live messages, presence
    and typing. Delivery is lossless from the client's point of view: every message is committed before it is
    acked or broadcast, and a reconnect with `after` replays whatever the client missed."""

    room: Room | None = None
    metrics_name = "chat"
    frame_types = frozenset({"message", "typing", "ping"})
    presence: Presence | None = None

    async def connected(self) -> None:
        slug = self.scope["url_route"]["kwargs"]["slug"]
        self.room = await Room.objects.filter(slug=slug).afirst()
        if self.room is None:
            await self.close(code=CLOSE_NO_SUCH_ROOM)
            return
        self.group = events.room_group(self.room.pk)
        self.bucket = TokenBucket(rate=settings.CHAT_MESSAGE_RATE, burst=settings.CHAT_MESSAGE_BURST)
        self.last_typing = 0.0
        # Live messages up to this id were already sent by the backfill.
        self.backfilled_through = 0
        self.presence = Presence(self.room.pk, self.user.pk, self.user.username, self.channel_name)
        registry = get_presence_registry()

        # Join the group before reading the backlog: a message committed in between arrives live, and is
        # skipped there if the backfill already delivered it (ids only grow).
        await self.channel_layer.group_add(self.group, self.channel_name)
        first_connection = await registry.join(self.presence)
        online = await registry.online(self.room.pk)
        last = await self.room.messages.order_by("-id").values_list("id", flat=True).afirst()
        await self.send_json(
            {
                "type": "welcome",
                "room": {"slug": self.room.slug, "name": self.room.name},
                "user": self.user_summary(),
                "online": online,
                "last_id": last or 0,
            }
        )
        after = self.after_param()
        if after is not None:
            async for message in selectors.messages_after(room_id=self.room.pk, after=after):
                await self.send_json(message_event(message))
                self.backfilled_through = message.pk
        if first_connection:
            await self.channel_layer.group_send(
                self.group, {"type": "chat.presence", "event": "join", "user": self.user_summary()}
            )
        self.heartbeat_task = asyncio.create_task(self.heartbeat())

    def after_param(self) -> int | None:
        raw = self.query_param("after")
        if raw is None or not raw.isdigit() or len(raw) > 18:
            return None
        return int(raw)

    def user_summary(self) -> dict:
        return {"id": self.user.pk, "username": self.user.username}

    async def heartbeat(self) -> None:
        """Keeps this connection's presence alive, re-joins the layer group (groups expire), and announces
        users whose every connection stopped heartbeating (their server process died)."""
        registry = get_presence_registry()
        presence = self.presence
        # Ends when released (the task is cancelled too, but it may be mid-beat when that happens).
        while self.presence is not None:
            await asyncio.sleep(settings.CHAT_HEARTBEAT_SECONDS)
            if self.presence is None:
                return
            try:
                await registry.heartbeat(presence)
                await self.channel_layer.group_add(self.group, self.channel_name)
                for user in await registry.sweep(self.room.pk):
                    await self.channel_layer.group_send(
                        self.group, {"type": "chat.presence", "event": "leave", "user": user}
                    )
            except Exception:
                logger.exception("presence heartbeat failed; retrying at the next beat")

    async def release(self) -> None:
        presence, self.presence = self.presence, None
        if presence is None:
            return
        task = getattr(self, "heartbeat_task", None)
        if task is not None:
            task.cancel()
        await self.channel_layer.group_discard(self.group, self.channel_name)
        if await get_presence_registry().leave(presence):
            await self.channel_layer.group_send(
                self.group, {"type": "chat.presence", "event": "leave", "user": self.user_summary()}
            )

    # --- client -> server ---------------------------------------------------------------------------------

    async def receive_json(self, content, **kwargs) -> None:
        handler = {"message": self.on_message, "typing": self.on_typing, "ping": self.on_ping}.get(content["type"])
        if handler is None:
            await self.send_error("unknown_type", f"Unknown type {content['type'][:40]!r}.")
            return
        await handler(content)

    async def on_message(self, content: dict) -> None:
        text, client_id = content.get("text"), content.get("client_id")
        # A refusal names the message it refuses, so the client knows which pending one it was.
        echo = {"client_id": client_id} if isinstance(client_id, str) and len(client_id) <= 64 else {}
        if not isinstance(text, str) or not text.strip():
            await self.send_error("invalid_message", "The message text must be a non-empty string.", **echo)
            return
        if len(text) > MAX_MESSAGE_LENGTH:
            detail = f"The message text is over {MAX_MESSAGE_LENGTH} characters."
            await self.send_error("invalid_message", detail, **echo)
            return
        try:
            client_uuid = uuid.UUID(client_id) if isinstance(client_id, str) else None
        except ValueError:
            client_uuid = None
        if client_uuid is None:
            await self.send_error("invalid_client_id", "client_id must be a UUID chosen by the client.", **echo)
            return
        if not self.bucket.take():
            await self.send_error("rate_limited", "Too many messages; slow down.", **echo)
            return
        # Attributes are ids only: the text never goes into a span.
        with span("chat.message_send", **{"chat.room_id": self.room.pk, "enduser.id": str(self.user.pk)}) as current:
            message, created = await database_sync_to_async(services.message_send)(
                room=self.room, user=self.user, text=text, client_id=client_uuid
            )
            current.set_attribute("chat.message_id", message.pk)
            current.set_attribute("chat.duplicate", not created)
        if created:
            CHAT_MESSAGES_SENT.inc()
        # Committed by now: the ack promises the message is stored.
        await self.send_json({"type": "ack", "client_id": client_id, "id": message.pk})

    async def on_typing(self, content: dict) -> None:
        now = time.monotonic()
        if now - self.last_typing < settings.CHAT_TYPING_INTERVAL_SECONDS:
            return
        self.last_typing = now
        await self.channel_layer.group_send(
            self.group, {"type": "chat.typing", "user": self.user_summary(), "sender": self.channel_name}
        )

    async def on_ping(self, content: dict) -> None:
        await self.send_json({"type": "pong"})

    # --- channel layer -> client --------------------------------------------------------------------------

    async def chat_message(self, payload: dict) -> None:
        # Not a running maximum: broadcasts from different processes may arrive out of id order, and each
        # must still be delivered.
        if payload["id"] > self.backfilled_through:
            await self.send(text_data=payload["frame"])

    async def chat_presence(self, payload: dict) -> None:
        if payload["user"]["id"] == self.user.pk:
            return  # the welcome's online list already told this connection about itself
        await self.send_json({"type": "presence", "event": payload["event"], "user": payload["user"]})

    async def chat_typing(self, payload: dict) -> None:
        if payload["sender"] != self.channel_name:
            await self.send_json({"type": "typing", "user": payload["user"]})


class NotificationConsumer(AuthenticatedConsumer):
    """`/ws/notifications/`: events for one user (e.g. a finished job), from any process."""

    metrics_name = "notifications"
    frame_types = frozenset({"ping"})

    async def connected(self) -> None:
        self.group = events.user_group(self.user.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.send_json({"type": "welcome", "user": {"id": self.user.pk, "username": self.user.username}})

    async def release(self) -> None:
        if self.user is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        if content["type"] == "ping":
            await self.send_json({"type": "pong"})
        else:
            await self.send_error("unknown_type", "This socket only answers ping.")

    async def notify_event(self, payload: dict) -> None:
        await self.send_json(payload["event"])


class NoRouteConsumer(AsyncJsonWebsocketConsumer):
    """Every WebSocket path no route matches (a typo, a room address no room can have) is closed with 4004, as an
    unknown room is, rather than failing in the router (an HTTP 500 at the handshake)."""

    async def connect(self) -> None:
        # Accepted first: a close code can only be delivered on an open socket.
        await self.accept()
        await self.close(code=4004)
