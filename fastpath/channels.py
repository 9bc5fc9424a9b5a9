"""Channels' consumers without a thread hop before each channel-layer event.

`AsyncConsumer.dispatch` closes stale database connections (`aclose_old_connections`, a hop to the consumer's
thread and back) before every handler. Events from the channel layer (a chat broadcast, presence, typing) never
touch the database in their handlers, and a room of N sockets handles each broadcast N times: with FAST_PATH on,
only the socket's own events (connect, receive, disconnect) pay for it, which are the ones whose handlers query.
"""

from channels.consumer import AsyncConsumer, get_handler_name
from channels.db import aclose_old_connections


async def dispatch(self, message) -> None:
    handler = getattr(self, get_handler_name(message), None)
    if handler is None:
        raise ValueError(f"No handler for message type {message['type']}")
    if message["type"].startswith("websocket."):
        await aclose_old_connections()
    await handler(message)


_channels_dispatch = AsyncConsumer.dispatch


def install(enabled: bool) -> None:
    """Channels' `dispatch` replaced (FAST_PATH on) or put back."""
    AsyncConsumer.dispatch = dispatch if enabled else _channels_dispatch
