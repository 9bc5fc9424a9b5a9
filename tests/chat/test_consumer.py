"""The chat consumer's rules, over the project's real ASGI stack, channel layer (Redis) and database."""

import json
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from chat.models import Message, Room
from chat.services import ticket_issue
from core import events
from tests.chat.conftest import make_messages

pytestmark = pytest.mark.django_db(transaction=True)


async def ticket_for(user) -> str:
    return await ticket_issue(user=user)


async def close_code(communicator) -> int:
    output = await communicator.receive_output(timeout=5)
    assert output["type"] == "websocket.close", output
    return output["code"]


async def join(connect, user, slug="general", after=None):
    query = f"ticket={await ticket_for(user)}" + (f"&after={after}" if after is not None else "")
    communicator, connected = await connect(f"/ws/chat/{slug}/?{query}")
    assert connected
    welcome = await communicator.receive_json_from(timeout=5)
    assert welcome["type"] == "welcome", welcome
    return communicator, welcome


async def next_of_type(communicator, kind: str) -> dict:
    while True:
        event = await communicator.receive_json_from(timeout=5)
        if event["type"] == kind:
            return event


async def events_before_pong(communicator) -> list[dict]:
    """Everything the socket receives before the answer to a ping sent now: what "nothing else" means here."""
    await communicator.send_json_to({"type": "ping"})
    events = []
    while (event := await communicator.receive_json_from(timeout=5)) != {"type": "pong"}:
        events.append(event)
    return events


def of_type(events: list[dict], kind: str) -> list[dict]:
    return [event for event in events if event["type"] == kind]


def message(text="hello", client_id=None) -> dict:
    return {"type": "message", "text": text, "client_id": client_id or str(uuid.uuid4())}


# --- who gets in ----------------------------------------------------------------------------------------


async def test_a_room_named_in_another_script_has_a_socket(connect, make_user):
    await Room.objects.acreate(slug="日本語ルーム", name="日本語ルーム")
    user = await sync_to_async(make_user)()
    communicator, connected = await connect(f"/ws/chat/日本語ルーム/?ticket={await ticket_for(user)}")
    assert connected
    welcome = await communicator.receive_json_from(timeout=5)
    assert welcome["type"] == "welcome" and welcome["room"]["slug"] == "日本語ルーム"


async def test_no_credentials_is_closed_with_4001(connect, room):
    communicator, connected = await connect("/ws/chat/general/")
    assert connected  # accepted so that the close code can be delivered
    assert await close_code(communicator) == 4001


async def test_a_ticket_works_once(connect, room, make_user):
    user = await sync_to_async(make_user)()
    ticket = await ticket_for(user)
    first, _ = await connect(f"/ws/chat/general/?ticket={ticket}")
    assert (await first.receive_json_from())["type"] == "welcome"
    second, _ = await connect(f"/ws/chat/general/?ticket={ticket}")
    assert await close_code(second) == 4001


@pytest.mark.parametrize("ticket", ["forged", "x" * 500, ""])
async def test_unknown_tickets_are_closed_with_4001(connect, room, ticket):
    communicator, _ = await connect(f"/ws/chat/general/?ticket={ticket}")
    assert await close_code(communicator) == 4001


async def test_a_deactivated_users_ticket_is_closed_with_4001(connect, room, make_user):
    user = await sync_to_async(make_user)()
    ticket = await ticket_for(user)
    user.is_active = False
    await user.asave()
    communicator, _ = await connect(f"/ws/chat/general/?ticket={ticket}")
    assert await close_code(communicator) == 4001


@pytest.mark.parametrize(
    "path", ["/ws/unknown/", "/ws/chat/%00/", "/ws/chat/a%0Ab/", "/ws/", "/ws/chat/a b/", "/ws/chat/a.b/"]
)
async def test_a_path_no_route_matches_is_closed_with_4004(connect, path):
    communicator, connected = await connect(path)
    assert connected
    assert await close_code(communicator) == 4004


async def test_a_ticket_issued_before_a_password_change_is_closed_with_4001(connect, room, make_user):
    from accounts.services import user_log_out_everywhere

    user = await sync_to_async(make_user)()
    ticket = await ticket_for(user)
    # What a password change does to the user's sessions (accounts.services._password_change).
    await sync_to_async(user_log_out_everywhere)(user=user)
    communicator, _ = await connect(f"/ws/chat/general/?ticket={ticket}")
    assert await close_code(communicator) == 4001
    fresh, _ = await connect(f"/ws/chat/general/?ticket={await ticket_for(user)}")
    assert (await fresh.receive_json_from())["type"] == "welcome"


async def test_unknown_room_is_closed_with_4004(connect, room, make_user):
    user = await sync_to_async(make_user)()
    communicator, _ = await connect(f"/ws/chat/no-such-room/?ticket={await ticket_for(user)}")
    assert await close_code(communicator) == 4004


async def test_foreign_origins_are_refused_at_the_handshake(connect, room, make_user):
    user = await sync_to_async(make_user)()
    _, connected = await connect(f"/ws/chat/general/?ticket={await ticket_for(user)}", origin=b"https://evil.example")
    assert not connected


async def test_non_browser_clients_without_origin_authenticate_by_ticket(connect, room, make_user):
    user = await sync_to_async(make_user)()
    communicator, connected = await connect(f"/ws/chat/general/?ticket={await ticket_for(user)}", origin=None)
    assert connected
    assert (await communicator.receive_json_from())["type"] == "welcome"


async def test_the_browser_session_cookie_authenticates(connect, room, make_user):
    user = await sync_to_async(make_user)("sessionuser")
    browser = Client()
    await sync_to_async(browser.force_login)(user)
    cookie = f"sessionid={browser.cookies['sessionid'].value}"
    communicator, _ = await connect("/ws/chat/general/", cookie=cookie)
    welcome = await communicator.receive_json_from()
    assert welcome["user"] == {"id": user.pk, "username": "sessionuser"}


# --- welcome and backfill -------------------------------------------------------------------------------


async def test_welcome_comes_first_and_names_the_room_user_online_and_last_id(connect, room, make_user):
    user = await sync_to_async(make_user)("wanda")
    messages = await sync_to_async(make_messages)(room, user, 3)
    _, welcome = await join(connect, user)
    assert welcome == {
        "type": "welcome",
        "room": {"slug": "general", "name": "General"},
        "user": {"id": user.pk, "username": "wanda"},
        "online": [{"id": user.pk, "username": "wanda"}],
        "last_id": messages[-1].pk,
    }


async def test_backfill_sends_every_message_after_the_given_id_in_order_before_live_ones(connect, room, make_user):
    user = await sync_to_async(make_user)()
    messages = await sync_to_async(make_messages)(room, user, 6)
    communicator, _ = await join(connect, user, after=messages[1].pk)
    received = [await communicator.receive_json_from() for _ in range(4)]
    assert [event["id"] for event in received] == [m.pk for m in messages[2:]]
    assert all(event["type"] == "message" and event["room"] == "general" for event in received)
    assert received[0]["user"] == {"id": user.pk, "username": user.username}
    assert received[0]["text"] == "message 2"

    await communicator.send_json_to(message("live one"))
    ack = await next_of_type(communicator, "ack")
    live = await next_of_type(communicator, "message")
    assert live["id"] == ack["id"] > messages[-1].pk


async def test_no_backfill_without_after(connect, room, make_user):
    user = await sync_to_async(make_user)()
    await sync_to_async(make_messages)(room, user, 3)
    communicator, _ = await join(connect, user)
    assert of_type(await events_before_pong(communicator), "message") == []


# --- sending --------------------------------------------------------------------------------------------


async def test_a_message_is_stored_acked_and_broadcast(connect, room, make_user):
    alice, bob = await sync_to_async(make_user)("alice"), await sync_to_async(make_user)("bob")
    alice_socket, _ = await join(connect, alice)
    bob_socket, _ = await join(connect, bob)
    client_id = str(uuid.uuid4())
    await alice_socket.send_json_to(message("hi bob", client_id))

    ack = await next_of_type(alice_socket, "ack")
    assert ack == {"type": "ack", "client_id": client_id, "id": ack["id"]}
    stored = await Message.objects.select_related("user").aget(pk=ack["id"])
    assert (stored.text, stored.user.username, str(stored.client_id)) == ("hi bob", "alice", client_id)

    delivered = await next_of_type(bob_socket, "message")
    assert delivered["id"] == ack["id"]
    assert delivered["text"] == "hi bob"
    assert delivered["client_id"] == client_id
    assert delivered["created_at"].endswith("Z")


async def test_a_resent_client_id_is_acked_with_the_same_id_and_not_stored_twice(connect, room, make_user):
    alice, bob = await sync_to_async(make_user)("alice"), await sync_to_async(make_user)("bob")
    alice_socket, _ = await join(connect, alice)
    bob_socket, _ = await join(connect, bob)
    client_id = str(uuid.uuid4())
    await alice_socket.send_json_to(message("only once", client_id))
    first_ack = await next_of_type(alice_socket, "ack")
    await alice_socket.send_json_to(message("only once", client_id))
    second_ack = await next_of_type(alice_socket, "ack")
    assert first_ack["id"] == second_ack["id"]
    assert await Message.objects.filter(client_id=client_id).acount() == 1

    assert (await next_of_type(bob_socket, "message"))["id"] == first_ack["id"]
    # The resend was not broadcast again.
    assert of_type(await events_before_pong(bob_socket), "message") == []


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_frame"),
        ('{"no": "type"}', "invalid_frame"),
        ('{"type": "shout"}', "unknown_type"),
        (json.dumps({"type": "message", "text": "", "client_id": str(uuid.uuid4())}), "invalid_message"),
        (json.dumps({"type": "message", "text": "   ", "client_id": str(uuid.uuid4())}), "invalid_message"),
        (json.dumps({"type": "message", "text": 42, "client_id": str(uuid.uuid4())}), "invalid_message"),
        (json.dumps({"type": "message", "text": "x" * 4001, "client_id": str(uuid.uuid4())}), "invalid_message"),
        (json.dumps({"type": "message", "text": "hi", "client_id": "not-a-uuid"}), "invalid_client_id"),
        (json.dumps({"type": "message", "text": "hi"}), "invalid_client_id"),
        # Text PostgreSQL cannot store (NUL) or UTF-8 cannot encode (a lone surrogate), anywhere in the frame.
        (json.dumps({"type": "message", "text": "a\x00b", "client_id": str(uuid.uuid4())}), "invalid_text"),
        (json.dumps({"type": "message", "text": "a\ud800b", "client_id": str(uuid.uuid4())}), "invalid_text"),
        ('{"type": "ping", "extra": {"\\udfff": 1}}', "invalid_text"),
        # Deeper than the interpreter's recursion limit.
        ('{"type": "ping", "x": ' + "[" * 5000 + "]" * 5000 + "}", "invalid_json"),
    ],
)
async def test_bad_frames_get_an_error_and_the_connection_stays_open(connect, room, make_user, frame, code):
    user = await sync_to_async(make_user)()
    communicator, _ = await join(connect, user)
    await communicator.send_to(text_data=frame)
    error = await next_of_type(communicator, "error")
    assert error["code"] == code
    assert error["detail"]
    await communicator.send_json_to({"type": "ping"})
    assert await next_of_type(communicator, "pong") == {"type": "pong"}
    assert await Message.objects.acount() == 0


async def test_exactly_4000_characters_are_accepted(connect, room, make_user):
    user = await sync_to_async(make_user)()
    communicator, _ = await join(connect, user)
    await communicator.send_json_to(message("x" * 4000))
    assert (await next_of_type(communicator, "ack"))["id"]


async def test_message_rate_is_limited_per_connection(connect, room, make_user, settings):
    settings.CHAT_MESSAGE_RATE, settings.CHAT_MESSAGE_BURST = 1, 3
    user = await sync_to_async(make_user)()
    communicator, _ = await join(connect, user)
    for _ in range(3):
        await communicator.send_json_to(message())
        await next_of_type(communicator, "ack")
    refused = message()
    await communicator.send_json_to(refused)
    error = await next_of_type(communicator, "error")
    assert (error["code"], error["client_id"]) == ("rate_limited", refused["client_id"])
    assert await Message.objects.acount() == 3


# --- presence and typing --------------------------------------------------------------------------------


async def test_presence_join_and_leave_are_announced_once_per_user(connect, room, make_user):
    alice, bob = await sync_to_async(make_user)("alice"), await sync_to_async(make_user)("bob")
    alice_socket, _ = await join(connect, alice)
    bob_socket, welcome = await join(connect, bob)
    assert [u["username"] for u in welcome["online"]] == ["alice", "bob"]
    assert await next_of_type(alice_socket, "presence") == {
        "type": "presence",
        "event": "join",
        "user": {"id": bob.pk, "username": "bob"},
    }

    # A second tab of bob's is not a new arrival, and closing one of two tabs is not a departure.
    bob_second_tab, _ = await join(connect, bob)
    await bob_second_tab.disconnect()
    assert of_type(await events_before_pong(alice_socket), "presence") == []

    await bob_socket.disconnect()
    assert await next_of_type(alice_socket, "presence") == {
        "type": "presence",
        "event": "leave",
        "user": {"id": bob.pk, "username": "bob"},
    }


async def test_typing_is_relayed_to_others_and_throttled(connect, room, make_user):
    alice, bob = await sync_to_async(make_user)("alice"), await sync_to_async(make_user)("bob")
    alice_socket, _ = await join(connect, alice)
    bob_socket, _ = await join(connect, bob)
    await next_of_type(alice_socket, "presence")
    for _ in range(3):
        await bob_socket.send_json_to({"type": "typing"})
    assert await next_of_type(alice_socket, "typing") == {"type": "typing", "user": {"id": bob.pk, "username": "bob"}}
    assert of_type(await events_before_pong(alice_socket), "typing") == []  # one typing event, not three
    assert of_type(await events_before_pong(bob_socket), "typing") == []  # the typist is not echoed


# --- notifications --------------------------------------------------------------------------------------


async def test_notifications_reach_every_socket_of_that_user_only(connect, make_user):
    alice, bob = await sync_to_async(make_user)("alice"), await sync_to_async(make_user)("bob")
    sockets = []
    for user in (alice, alice, bob):
        communicator, connected = await connect(f"/ws/notifications/?ticket={await ticket_for(user)}")
        assert connected
        assert (await communicator.receive_json_from())["type"] == "welcome"
        sockets.append(communicator)

    event = {"type": "job", "job": {"id": 7, "status": "succeeded"}}
    await sync_to_async(events.notify_user_on_commit)(alice.pk, event)
    assert await sockets[0].receive_json_from() == event
    assert await sockets[1].receive_json_from() == event
    assert await sockets[2].receive_nothing(timeout=0.3)


async def test_notifications_need_authentication(connect):
    communicator, _ = await connect("/ws/notifications/")
    assert await close_code(communicator) == 4001
