"""End to end: real server processes sharing PostgreSQL and Redis, real WebSocket clients (`websockets`)."""

import asyncio
import json
import os
import signal
import time
import uuid

import pytest
import websockets

from chat.models import Room
from tests.conftest import child_process_env
from tests.helpers import ServerProcess, http_json, open_websocket

pytestmark = pytest.mark.django_db(transaction=True)

# Short presence timings so that a crashed process's users drop out within seconds; a message rate that lets
# one client send a burst of missed messages (the per-connection limit has its own consumer test).
FAST_PRESENCE = {
    "CHAT_PRESENCE_TTL_SECONDS": "3",
    "CHAT_HEARTBEAT_SECONDS": "1",
    "CHAT_MESSAGE_RATE": "1000",
    "CHAT_MESSAGE_BURST": "1000",
}


@pytest.fixture
def servers(transactional_db, tmp_path):
    started = [ServerProcess(child_process_env(**FAST_PRESENCE), tmp_path / f"server-{name}.log") for name in "ab"]
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def chat_users(make_user, issue_tokens):
    """Two users with access tokens, and the room they meet in."""
    Room.objects.create(slug="lobby", name="Lobby")
    alice, bob = make_user("alice"), make_user("bob")
    return {"alice": (alice, issue_tokens(alice).access_token), "bob": (bob, issue_tokens(bob).access_token)}


async def open_chat(server: ServerProcess, access_token: str, *, after: int | None = None, slug: str = "lobby"):
    query = f"&after={after}" if after is not None else ""
    socket = await open_websocket(server, access_token, f"/ws/chat/{slug}/", query, max_size=None)
    welcome = await receive(socket)
    assert welcome["type"] == "welcome", welcome
    return socket, welcome


async def receive(socket, within: float = 10) -> dict:
    return json.loads(await asyncio.wait_for(socket.recv(), within))


async def receive_until(socket, predicate, within: float = 10) -> dict:
    deadline = time.monotonic() + within
    while True:
        event = await receive(socket, max(deadline - time.monotonic(), 0.01))
        if predicate(event):
            return event


async def send_message(socket, text: str) -> int:
    client_id = str(uuid.uuid4())
    await socket.send(json.dumps({"type": "message", "text": text, "client_id": client_id}))
    ack = await receive_until(socket, lambda e: e["type"] == "ack" and e["client_id"] == client_id)
    return ack["id"]


async def test_clients_on_two_processes_see_each_others_messages_and_presence(servers, chat_users):
    server_a, server_b = servers
    alice_socket, _ = await open_chat(server_a, chat_users["alice"][1])
    bob_socket, bob_welcome = await open_chat(server_b, chat_users["bob"][1])
    assert {user["username"] for user in bob_welcome["online"]} == {"alice", "bob"}
    joined = await receive_until(alice_socket, lambda e: e["type"] == "presence")
    assert (joined["event"], joined["user"]["username"]) == ("join", "bob")

    from_alice = await send_message(alice_socket, "hello from process A")
    seen_by_bob = await receive_until(bob_socket, lambda e: e["type"] == "message")
    assert (seen_by_bob["id"], seen_by_bob["text"]) == (from_alice, "hello from process A")

    from_bob = await send_message(bob_socket, "hello from process B")
    seen_by_alice = await receive_until(alice_socket, lambda e: e["type"] == "message" and e["id"] == from_bob)
    assert seen_by_alice["user"]["username"] == "bob"

    await bob_socket.close()
    left = await receive_until(alice_socket, lambda e: e["type"] == "presence")
    assert (left["event"], left["user"]["username"]) == ("leave", "bob")
    await alice_socket.close()


async def test_a_reconnect_with_after_gets_every_missed_message_exactly_once(servers, chat_users):
    server_a, server_b = servers
    alice_socket, _ = await open_chat(server_a, chat_users["alice"][1])
    bob_socket, _ = await open_chat(server_b, chat_users["bob"][1])
    first = await send_message(alice_socket, "before the drop")
    assert (await receive_until(bob_socket, lambda e: e["type"] == "message"))["id"] == first
    await bob_socket.close()

    missed = [await send_message(alice_socket, f"missed {i}") for i in range(25)]

    # Bob comes back through the other process, and alice keeps talking while his backfill runs.
    bob_socket, _ = await open_chat(server_a, chat_users["bob"][1], after=first)
    during = [await send_message(alice_socket, f"during {i}") for i in range(5)]
    expected = missed + during
    received = []
    while len(received) < len(expected):
        event = await receive(bob_socket)
        if event["type"] == "message":
            received.append(event["id"])
    assert received == expected  # every missed message, once, in order, then the live ones
    await bob_socket.send(json.dumps({"type": "ping"}))
    assert await receive_until(bob_socket, lambda e: e["type"] in {"pong", "message"}) == {"type": "pong"}
    await alice_socket.close()
    await bob_socket.close()


async def test_a_frame_over_one_mebibyte_closes_the_socket_with_1009(servers, chat_users):
    socket, _ = await open_chat(servers[0], chat_users["alice"][1])
    await socket.send(json.dumps({"type": "message", "text": "x" * (1024 * 1024), "client_id": str(uuid.uuid4())}))
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await receive(socket)
    assert socket.close_code == 1009


async def test_users_of_a_crashed_process_drop_out_of_presence(servers, chat_users):
    server_a, server_b = servers
    alice_socket, _ = await open_chat(server_a, chat_users["alice"][1])
    bob_socket, _ = await open_chat(server_b, chat_users["bob"][1])
    await receive_until(alice_socket, lambda e: e["type"] == "presence" and e["event"] == "join")

    os.kill(server_b.process.pid, signal.SIGKILL)  # no goodbye: only the missing heartbeat tells
    server_b.process.wait()
    left = await receive_until(alice_socket, lambda e: e["type"] == "presence", within=15)
    assert (left["event"], left["user"]["username"]) == ("leave", "bob")
    await alice_socket.close()


async def test_shutdown_drains_then_closes_sockets_with_1012(transactional_db, chat_users, tmp_path):
    server = ServerProcess(child_process_env(), tmp_path / "draining.log", serve_args=("--drain-seconds", "2"))
    try:
        socket, _ = await open_chat(server, chat_users["alice"][1])
        server.process.send_signal(signal.SIGTERM)
        # Draining: still serving, but no longer ready, so the load balancer moves new traffic away.
        await asyncio.sleep(0.3)
        status, body = await asyncio.to_thread(http_json, f"{server.base_url}/ready")
        assert (status, body["code"]) == (503, "shutting_down")
        assert (await asyncio.to_thread(http_json, f"{server.base_url}/health"))[0] == 200

        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await receive(socket, within=15)
        assert socket.close_code == 1012  # "service restart": reconnect (elsewhere) and backfill
        assert await asyncio.to_thread(server.process.wait, 20) == 0
    finally:
        server.stop()
