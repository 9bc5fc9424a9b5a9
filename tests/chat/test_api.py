"""The chat REST endpoints: rooms, history windows, tickets."""

import uuid
from urllib.parse import quote

import pytest
from redis import Redis

from chat.models import Message, Room
from tests.chat.conftest import make_messages

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = "/api/v1/chat"


def test_rooms_need_authentication(client):
    assert client.get(f"{CHAT}/rooms").status_code == 401
    assert client.post(f"{CHAT}/rooms", {"name": "x"}, content_type="application/json").status_code == 401
    assert client.post(f"{CHAT}/tickets").status_code == 401


def test_create_and_list_rooms(client, make_user, bearer):
    headers = bearer(make_user())
    response = client.post(
        f"{CHAT}/rooms", {"name": "  Café Talk! "}, content_type="application/json", headers=headers
    )
    assert response.status_code == 201
    room = response.json()
    assert room["slug"] == "cafe-talk"
    assert room["name"] == "Café Talk!"
    assert set(room) == {"slug", "name", "created_at"}

    client.post(f"{CHAT}/rooms", {"name": "Announcements"}, content_type="application/json", headers=headers)
    listed = client.get(f"{CHAT}/rooms", headers=headers).json()
    assert [r["slug"] for r in listed] == ["announcements", "cafe-talk"]


@pytest.mark.parametrize(
    ("name", "slug"), [("日本語ルーム", "日本語ルーム"), ("Кофе и чай", "кофе-и-чай"), ("ガンダム 2", "ガンダム-2")]
)
def test_room_names_in_any_script_keep_their_letters(client, make_user, bearer, name, slug):
    headers = bearer(make_user())
    response = client.post(f"{CHAT}/rooms", {"name": name}, content_type="application/json", headers=headers)
    assert response.status_code == 201, response.content
    assert response.json()["slug"] == slug
    history = client.get(f"{CHAT}/rooms/{quote(slug)}/messages", headers=headers)
    assert history.status_code == 200, history.content
    assert history.json() == {"items": [], "has_more": False}


def test_a_taken_slug_is_a_409(client, make_user, bearer):
    headers = bearer(make_user())
    client.post(f"{CHAT}/rooms", {"name": "General"}, content_type="application/json", headers=headers)
    response = client.post(f"{CHAT}/rooms", {"name": "general!"}, content_type="application/json", headers=headers)
    assert response.status_code == 409
    assert response.json()["code"] == "room_exists"
    assert Room.objects.count() == 1


@pytest.mark.parametrize(
    "body", [{}, {"name": ""}, {"name": "!!!"}, {"name": "x" * 101}, {"name": 5}, {"name": "a", "x": 1}]
)
def test_bad_room_names_are_422(client, make_user, bearer, body):
    response = client.post(f"{CHAT}/rooms", body, content_type="application/json", headers=bearer(make_user()))
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


@pytest.fixture
def history(room, make_user):
    return make_messages(room, make_user("talker"), 30)


def ids(response) -> list[int]:
    return [item["id"] for item in response.json()["items"]]


def test_history_without_bounds_is_the_newest_window_oldest_first(client, make_user, bearer, history):
    response = client.get(f"{CHAT}/rooms/general/messages?limit=10", headers=bearer(make_user()))
    assert response.status_code == 200
    assert ids(response) == [m.pk for m in history[-10:]]
    assert response.json()["has_more"] is True
    item = response.json()["items"][0]
    assert set(item) == {"id", "room", "user", "text", "client_id", "created_at"}
    assert item["room"] == "general"
    assert item["user"] == {"id": history[0].user_id, "username": "talker"}


def test_history_before_pages_backwards(client, make_user, bearer, history):
    headers = bearer(make_user())
    older = client.get(f"{CHAT}/rooms/general/messages?before={history[10].pk}&limit=5", headers=headers)
    assert ids(older) == [m.pk for m in history[5:10]]
    assert older.json()["has_more"] is True
    oldest = client.get(f"{CHAT}/rooms/general/messages?before={history[3].pk}&limit=5", headers=headers)
    assert ids(oldest) == [m.pk for m in history[:3]]
    assert oldest.json()["has_more"] is False


def test_history_after_reads_forward(client, make_user, bearer, history):
    headers = bearer(make_user())
    newer = client.get(f"{CHAT}/rooms/general/messages?after={history[10].pk}&limit=5", headers=headers)
    assert ids(newer) == [m.pk for m in history[11:16]]
    assert newer.json()["has_more"] is True
    tail = client.get(f"{CHAT}/rooms/general/messages?after={history[-3].pk}&limit=5", headers=headers)
    assert ids(tail) == [m.pk for m in history[-2:]]
    assert tail.json()["has_more"] is False


def test_history_between_before_and_after(client, make_user, bearer, history):
    query = f"after={history[4].pk}&before={history[9].pk}"
    response = client.get(f"{CHAT}/rooms/general/messages?{query}", headers=bearer(make_user()))
    assert ids(response) == [m.pk for m in history[5:9]]


def test_history_costs_one_query_whatever_the_limit(client, make_user, bearer, history, count_statements):
    headers = bearer(make_user())
    for limit in (1, 30, 100):
        with count_statements() as counted:
            client.get(f"{CHAT}/rooms/general/messages?limit={limit}", headers=headers)
        # The caller, the room, one window.
        assert counted.total == 3


def test_history_of_an_unknown_room_is_404(client, make_user, bearer):
    response = client.get(f"{CHAT}/rooms/nowhere/messages", headers=bearer(make_user()))
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "before=-1", "after=abc", "before=99999999999999999999"])
def test_history_bounds_are_validated(client, make_user, bearer, room, query):
    response = client.get(f"{CHAT}/rooms/general/messages?{query}", headers=bearer(make_user()))
    assert response.status_code == 422


def test_a_ticket_lives_30_seconds_in_redis(client, make_user, bearer, settings):
    response = client.post(f"{CHAT}/tickets", headers=bearer(make_user()))
    assert response.status_code == 200
    body = response.json()
    assert body["expires_in"] == settings.CHAT_TICKET_TTL_SECONDS == 30
    assert len(body["ticket"]) >= 32
    redis = Redis.from_url(settings.REDIS_URL)
    assert 0 < redis.ttl(f"{settings.CACHE_KEY_PREFIX}:kv:ws-ticket:{body['ticket']}") <= 30


def test_moderation_delete_in_the_admin_removes_the_message(client, make_user, room):
    staff = make_user("moderator", is_staff=True, is_superuser=True)
    message = Message.objects.create(room=room, user=staff, text="spam spam", client_id=uuid.uuid4())
    client.force_login(staff)
    search = client.get("/admin/chat/message/?q=spam")
    assert search.status_code == 200
    assert b"spam spam" in search.content
    response = client.post(f"/admin/chat/message/{message.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Message.objects.filter(pk=message.pk).exists()
