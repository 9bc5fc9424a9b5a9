"""WebSocket consumers: a chat room, and the per-user notification stream."""

import asyncio
import json
import logging
import time
import uuid

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from opentelemetry.trace import SpanKind

from accounts.models import User
from chat import selectors, services
from chat.middleware import query_param
from chat.models import Room
from chat.schemas import FrameRefused, message_event, message_in, parse_frame
from chat.throttle import TokenBucket
from core import events
from core.logging import request_id_var, user_id_var
from core.metrics import CHAT_MESSAGES_SENT, WEBSOCKET_CONNECTIONS
from core.tracing import context_from_headers, span, tracer

logger = logging.getLogger(__name__)

CLOSE_NOT_AUTHENTICATED = 4001
CLOSE_NO_SUCH_ROOM = 4004


class AuthenticatedConsumer(AsyncJsonWebsocketConsumer):
    """Accepts the handshake and serves the user chat/middleware.py found (a ticket, or the browser page's
    session); anyone else is closed with 4001 at once."""

    user: User | None = None
    # The `consumer` label of websocket_connections_open.
    metrics_name = "websocket"
    # Frame types worth naming in a span attribute; anything else a client sends is "other".
    frame_types: frozenset[str] = frozenset()

    def query_param(self, name: str) -> str | None:
        return query_param(self.scope, name)

    async def connect(self) -> None:
        # Accept first: a close code (4001, 4004) can only be sent on an open socket.
        await self.accept()
        WEBSOCKET_CONNECTIONS.labels(self.metrics_name).inc()
        self.counted = True
        # Ids for every log line of this connection: it runs as one task, so these stay set until it ends.
        request_id_var.set(uuid.uuid4().hex)
        # A traceparent on the handshake parents the span of every frame handled on this connection.
        self.trace_context = context_from_headers(self.scope.get("headers", []))
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            await self.close(code=CLOSE_NOT_AUTHENTICATED)
            return
        self.user = user
        user_id_var.set(user.pk)
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
        try:
            content = parse_frame(text_data)
        except FrameRefused as refused:
            await self.send_error(refused.code, refused.detail)
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
    acked or broadcast, and a reconnect with `after` replays whatever the client missed. The room's group and
    presence are chat.services.RoomMembership's; frames are parsed and validated by chat.schemas."""

    room: Room | None = None
    metrics_name = "chat"
    frame_types = frozenset({"message", "typing", "ping"})
    membership: services.RoomMembership | None = None

    async def connected(self) -> None:
        self.room = await selectors.room_or_none(slug=self.scope["url_route"]["kwargs"]["slug"])
        if self.room is None:
            await self.close(code=CLOSE_NO_SUCH_ROOM)
            return
        self.bucket = TokenBucket(rate=settings.CHAT_MESSAGE_RATE, burst=settings.CHAT_MESSAGE_BURST)
        self.last_typing = 0.0
        # Live messages up to this id were already sent by the backfill.
        self.backfilled_through = 0
        self.membership = services.RoomMembership(
            room=self.room, user=self.user, channel_name=self.channel_name, channel_layer=self.channel_layer
        )
        await self.send_json(await self.membership.join())
        after = self.after_param()
        if after is not None:
            async for message in selectors.messages_after(room_id=self.room.pk, after=after):
                await self.send_json(message_event(message))
                self.backfilled_through = message.pk
        await self.membership.announce_join()
        self.heartbeat_task = asyncio.create_task(self.heartbeat())

    def after_param(self) -> int | None:
        raw = self.query_param("after")
        if raw is None or not raw.isdigit() or len(raw) > 18:
            return None
        return int(raw)

    async def heartbeat(self) -> None:
        membership = self.membership
        # Ends when released (the task is cancelled too, but it may be mid-beat when that happens).
        while self.membership is not None:
            await asyncio.sleep(settings.CHAT_HEARTBEAT_SECONDS)
            if self.membership is None:
                return
            try:
                await membership.beat()
            except Exception:
                logger.exception("presence heartbeat failed; retrying at the next beat")

    async def release(self) -> None:
        membership, self.membership = self.membership, None
        if membership is None:
            return
        task = getattr(self, "heartbeat_task", None)
        if task is not None:
            task.cancel()
        await membership.leave()

    # --- client -> server ---------------------------------------------------------------------------------

    async def receive_json(self, content, **kwargs) -> None:
        handler = {"message": self.on_message, "typing": self.on_typing, "ping": self.on_ping}.get(content["type"])
        if handler is None:
            await self.send_error("unknown_type", f"Unknown type {content['type'][:40]!r}.")
            return
        await handler(content)

    async def on_message(self, content: dict) -> None:
        client_id = content.get("client_id")
        # A refusal names the message it refuses, so the client knows which pending one it was.
        echo = {"client_id": client_id} if isinstance(client_id, str) and len(client_id) <= 64 else {}
        try:
            frame = message_in(content)
        except FrameRefused as refused:
            await self.send_error(refused.code, refused.detail, **echo)
            return
        if not self.bucket.take():
            await self.send_error("rate_limited", "Too many messages; slow down.", **echo)
            return
        # Attributes are ids only: the text never goes into a span.
        with span("chat.message_send", **{"chat.room_id": self.room.pk, "enduser.id": str(self.user.pk)}) as current:
            message, created = await database_sync_to_async(services.message_send)(
                room=self.room, user=self.user, text=frame.text, client_id=frame.client_id
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
        if self.membership is not None:
            await self.membership.typing()

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
