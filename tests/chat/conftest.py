import uuid

import pytest
from channels.testing import WebsocketCommunicator

from chat.models import Message, Room
from config.asgi import application
from fastpath import db as loop_db
from tests.conftest import child_process_env
from tests.helpers import ServerProcess


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
    # The application marks the loop it runs on as one that serves: this test's loop, which ends with the test,
    # must not keep the database connections its reads opened.
    await loop_db.close_pool()


def make_messages(room: Room, user, count: int) -> list[Message]:
    return [
        Message.objects.create(room=room, user=user, text=f"message {i}", client_id=uuid.uuid4()) for i in range(count)
    ]


@pytest.fixture
def second_server_process(transactional_db, tmp_path):
    """Another real server process on the same database and Redis, for people on different processes."""
    server = ServerProcess(child_process_env(), tmp_path / "second-server.log")
    yield server
    server.stop()
