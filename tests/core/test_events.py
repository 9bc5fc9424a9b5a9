"""core/events.py: events reach the Channels layer (the real Redis one) only once their transaction commits."""

import asyncio

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.db import transaction

from core import events

pytestmark = pytest.mark.django_db(transaction=True)


def received(group: str, publish) -> list[dict]:
    """What a channel subscribed to `group` receives within a second of `publish()` (run in a thread, as a
    service or task would). One event loop throughout: a pub/sub layer's subscription lives in its loop."""
    layer = get_channel_layer()

    async def listen() -> list[dict]:
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        await sync_to_async(publish)()
        messages = []
        try:
            while True:
                messages.append(await asyncio.wait_for(layer.receive(channel), timeout=1))
        except TimeoutError:
            return messages
        finally:
            await layer.group_discard(group, channel)

    return async_to_sync(listen)()


def test_an_event_is_published_once_its_transaction_commits():
    def publish():
        with transaction.atomic():
            events.notify_user_on_commit(7, {"type": "job", "job": {"id": 1}})

    assert received(events.user_group(7), publish) == [
        {"type": "notify.event", "event": {"type": "job", "job": {"id": 1}}}
    ]


def test_a_rolled_back_transaction_publishes_nothing():
    def publish():
        with pytest.raises(RuntimeError), transaction.atomic():
            events.publish_on_commit(events.room_group(3), {"type": "chat.message", "id": 1, "frame": "{}"})
            raise RuntimeError("rolled back")

    assert received(events.room_group(3), publish) == []
