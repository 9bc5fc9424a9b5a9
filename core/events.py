"""Events to WebSocket clients: the one way any app reaches sockets, on every server process, through the Channels
layer. Zulip's `send_event_on_commit` is the model: an event about a row is published once the transaction that
wrote the row has committed, so no socket hears of a row the database does not hold (or never will).

Delivery is best effort by design: a client that misses an event heals from the database (the chat's `after`,
a job's own endpoint). A failure is logged, never raised into the request or task that published.

The groups are named here, so publishers (chat, exports) and the consumers that subscribe agree without importing
one another.
"""

import logging
from functools import partial

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)


def room_group(room_id: int) -> str:
    """Every socket in a chat room."""
    return f"chat.room.{room_id}"


def user_group(user_id: int) -> str:
    """Every `/ws/notifications/` socket of a user."""
    return f"notify.user.{user_id}"


def publish(group: str, message: dict) -> None:
    """Send a Channels message to a group now (from synchronous code: a service, a task)."""
    try:
        async_to_sync(get_channel_layer().group_send)(group, message)
    except Exception:
        logger.exception("publishing to %s failed", group)


def publish_on_commit(group: str, message: dict, *, using: str | None = None) -> None:
    """`publish` once the current transaction commits (at once outside one); nothing if it rolls back."""
    transaction.on_commit(partial(publish, group, message), using=using)


def notify_user_on_commit(user_id: int, event: dict) -> None:
    """An event for the user's notification sockets (NotificationConsumer sends it as it is), after commit."""
    publish_on_commit(user_group(user_id), {"type": "notify.event", "event": event})
