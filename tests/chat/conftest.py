import uuid

import pytest
from channels.testing import WebsocketCommunicator

from chat.models import Message, Room
from config.asgi import application


@pytest.fixture
def room(make_user):
    return Room.objects.create(slug="general", name="General", created_by=make_user("owner"))


@pytest.fixture
async def connect():
    """Open a real consumer over the project's ASGI stack (origin check, session middleware, routing)."""
    opened: list[WebsocketCommunicator] = []

    async def open_socket(path: str, *, origin: bytes | None = b"http://localhost", cookie: str | None = None):
        headers = []
        if origin is not None:
            headers.append((b"origin", origin))
        if cookie is not None:
            headers.append((b"cookie", cookie.encode()))
        communicator = WebsocketCommunicator(application, path, headers=headers)
        opened.append(communicator)
        connected, _ = await communicator.connect(timeout=5)
        return communicator, connected

    yield open_socket
    for communicator in opened:
        await communicator.disconnect()


def make_messages(room: Room, user, count: int) -> list[Message]:
    return [
        Message.objects.create(room=room, user=user, text=f"message {i}", client_id=uuid.uuid4()) for i in range(count)
    ]
