"""The chat pages in a real headless Chromium against a real server process: people log in through the form,
create rooms, and talk in a room over the page's WebSocket, surviving dropped connections without losing or
repeating a message.

Playwright's sync API marks an event loop as running on this thread while the browser is open, and Django
refuses ORM calls from such a thread: each test sets up its data first and opens the browser afterwards."""

import contextlib
import json
import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, WebSocketRoute, expect, sync_playwright

from chat.models import Message, Room
from tests.conftest import DEFAULT_PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]
PHONE = {"viewport": {"width": 390, "height": 760}, "is_mobile": True, "has_touch": True}


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def fill_login_form(page: Page, username: str, password: str = DEFAULT_PASSWORD) -> None:
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def log_in(browser: Browser, base_url: str, username: str, **context_options) -> Page:
    """A page of its own browser context (its own cookies), logged in through the form, on the rooms page."""
    page = browser.new_context(**context_options).new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{base_url}/")
    fill_login_form(page, username)
    expect(page.get_by_role("heading", name="Rooms")).to_be_visible()
    return page


def open_room(page: Page, name: str) -> None:
    page.get_by_role("link", name=name, exact=True).click()
    expect(page.get_by_role("heading", name=name)).to_be_visible()
    expect(page.locator("#connection")).to_have_text("Connected")


def composer(page: Page):
    return page.get_by_role("textbox", name="Message")


def send(page: Page, text: str) -> None:
    composer(page).fill(text)
    composer(page).press("Enter")


def messages(page: Page):
    return page.locator("#messages li")


def message_texts(page: Page):
    return page.locator("#messages li .text")


def outbox(page: Page):
    return page.locator("#outbox li")


# --- logging in ---------------------------------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_the_login_form_and_back(live_server_process, make_user):
    base_url = live_server_process.base_url
    make_user("alice")
    Room.objects.create(slug="lobby", name="Lobby")

    with chromium() as browser:
        page = browser.new_page()
        page.set_default_timeout(15_000)
        page.goto(f"{base_url}/")
        expect(page).to_have_url(f"{base_url}/accounts/login/?next=/")

        fill_login_form(page, "alice", "not the password")
        expect(page.get_by_role("alert")).to_contain_text("Please enter a correct username and password")

        fill_login_form(page, "alice")
        expect(page).to_have_url(f"{base_url}/")
        expect(page.get_by_text("Signed in as alice")).to_be_visible()

        page.get_by_role("button", name="Log out").click()
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        # A room's address leads to the form too, and back to that room after logging in.
        page.goto(f"{base_url}/chat/lobby/")
        expect(page).to_have_url(f"{base_url}/accounts/login/?next=/chat/lobby/")
        fill_login_form(page, "alice")
        expect(page).to_have_url(f"{base_url}/chat/lobby/")
        expect(page.get_by_role("heading", name="Lobby")).to_be_visible()


# --- the rooms page -----------------------------------------------------------------------------------------


def test_rooms_are_listed_and_created_with_the_api_errors_shown_inline(live_server_process, make_user):
    base_url = live_server_process.base_url
    make_user("alice")
    for name in ("General", "Random"):
        Room.objects.create(slug=name.lower(), name=name)

    with chromium() as browser:
        page = log_in(browser, base_url, "alice")
        rooms = page.locator("#room-list li")
        expect(rooms).to_have_text(["General", "Random"])

        name = page.get_by_label("Room name")
        create = page.get_by_role("button", name="Create room")
        name.fill("Music <b>& more</b>")
        create.click()
        expect(page.get_by_text("Room “Music <b>& more</b>” created.")).to_be_visible()
        # In name order, and the markup in the name is text, not markup.
        expect(rooms).to_have_text(["General", "Music <b>& more</b>", "Random"])
        expect(page.locator("#room-list b")).to_have_count(0)
        expect(name).to_have_value("")

        # The API's refusals are shown next to the form: a taken address (409), a name with no letters (422).
        name.fill("general")
        create.click()
        expect(page.locator("#create-room-error")).to_have_text("A room with the address 'general' already exists.")
        name.fill("!!!")
        create.click()
        expect(page.locator("#create-room-error")).to_have_text("The name needs at least one letter or digit.")
        expect(rooms).to_have_count(3)

        open_room(page, "Music <b>& more</b>")
        expect(page).to_have_url(f"{base_url}/chat/music-b-moreb/")

        response = page.goto(f"{base_url}/chat/no-such-room/")
        assert response.status == 404


# --- a room -------------------------------------------------------------------------------------------------


def test_two_people_see_each_other_online_typing_and_talking(live_server_process, second_server_process, make_user):
    make_user("alice")
    make_user("bob")
    Room.objects.create(slug="lobby", name="Lobby")

    # Each on a server process of their own: everything between them crosses Redis.
    with chromium() as browser:
        alice = log_in(browser, live_server_process.base_url, "alice")
        bob = log_in(browser, second_server_process.base_url, "bob", **PHONE)
        open_room(alice, "Lobby")
        open_room(bob, "Lobby")

        expect(alice.locator("#online li")).to_have_text(["alice (you)", "bob"])
        expect(bob.locator("#online li")).to_have_text(["alice", "bob (you)"])

        composer(alice).press_sequentially("Hi <b>bob</b>")
        expect(bob.locator("#typing")).to_have_text("alice is typing…")
        composer(alice).press("Enter")

        for page in (alice, bob):
            expect(messages(page)).to_have_count(1)
            expect(messages(page).first.locator(".author")).to_have_text("alice")
            expect(message_texts(page)).to_have_text(["Hi <b>bob</b>"])
            expect(page.locator("#messages b")).to_have_count(0)
        # Delivered: nothing left waiting for an ack, and the message ended bob's view of alice typing.
        expect(outbox(alice)).to_have_count(0)
        expect(bob.locator("#typing")).to_be_empty()

        send(bob, "Hello alice")
        for page in (alice, bob):
            expect(message_texts(page)).to_have_text(["Hi <b>bob</b>", "Hello alice"])
            expect(messages(page).last.locator(".author")).to_have_text("bob")

        # Signals go out at most once a second, so type as long as a person would. Without a message to end it, the
        # indicator goes away by itself a few seconds after the last signal.
        composer(bob).press_sequentially("still there? anyone?", delay=150)
        expect(alice.locator("#typing")).to_have_text("bob is typing…")
        expect(alice.locator("#typing")).to_be_empty(timeout=8_000)

        bob.context.close()
        expect(alice.locator("#online li")).to_have_text(["alice (you)"])


def test_history_shows_the_newest_page_and_loads_older_pages_at_the_top(live_server_process, make_user):
    base_url = live_server_process.base_url
    author = make_user("archivist")
    make_user("alice")
    room = Room.objects.create(slug="archive", name="Archive")
    Message.objects.bulk_create(
        Message(room=room, user=author, text=f"message {i}", client_id=uuid.uuid4()) for i in range(120)
    )

    with chromium() as browser:
        page = log_in(browser, base_url, "alice")
        open_room(page, "Archive")
        texts = message_texts(page)
        expect(texts).to_have_count(50)
        expect(texts.first).to_have_text("message 70")
        # The room opens at its newest message.
        expect(texts.last).to_have_text("message 119")
        expect(texts.last).to_be_in_viewport()

        log = page.get_by_role("log")
        log.hover()
        page.mouse.wheel(0, -100_000)
        expect(texts).to_have_count(100)
        expect(texts.first).to_have_text("message 20")
        # The older page went in above without moving what the reader was looking at.
        expect(texts.nth(50)).to_be_in_viewport()
        expect(page.get_by_text("This is the beginning of the room.")).to_be_hidden()

        page.mouse.wheel(0, -100_000)
        expect(texts).to_have_count(120)
        expect(page.get_by_text("This is the beginning of the room.")).to_be_visible()
        assert texts.all_text_contents() == [f"message {i}" for i in range(120)]


def test_a_dropped_connection_heals_with_every_message_once_and_in_order(
    live_server_process, second_server_process, make_user
):
    make_user("alice")
    make_user("bob")
    Room.objects.create(slug="lobby", name="Lobby")

    with chromium() as browser:
        alice = log_in(browser, live_server_process.base_url, "alice")
        bob = log_in(browser, second_server_process.base_url, "bob")
        open_room(alice, "Lobby")
        open_room(bob, "Lobby")
        send(alice, "before the drop")
        expect(message_texts(bob)).to_have_text(["before the drop"])

        alice.context.set_offline(True)
        expect(alice.locator("#connection")).to_contain_text("Connection lost")
        # Written while offline: shown as waiting, sent once the page is back.
        send(alice, "written offline")
        expect(outbox(alice)).to_contain_text("Waiting for the connection")
        for i in range(3):
            send(bob, f"missed {i}")
        expect(message_texts(bob)).to_have_count(4)

        alice.context.set_offline(False)
        expected = ["before the drop", "missed 0", "missed 1", "missed 2", "written offline"]
        for page in (alice, bob):
            expect(message_texts(page)).to_have_text(expected)
        expect(alice.locator("#connection")).to_have_text("Connected")
        expect(outbox(alice)).to_have_count(0)


class LosingNetwork:
    """Stands between the page and the server (Playwright's WebSocket routing, over real connections to the
    server) and, when armed, loses the server's ack of the next message and cuts the connection right there: the
    message is stored, but the page cannot know."""

    def __init__(self) -> None:
        self.armed = False
        self.urls: list[str] = []
        self.sent: list[dict] = []

    def route(self, page_side: WebSocketRoute) -> None:
        self.urls.append(page_side.url)
        server_side = page_side.connect_to_server()
        cut = False

        def to_server(frame) -> None:
            if not cut:
                self.sent.append(json.loads(frame))
                server_side.send(frame)

        def to_page(frame) -> None:
            nonlocal cut
            if cut:
                return  # e.g. the broadcast of the message whose ack was lost: it would tell the page all the same
            if self.armed and json.loads(frame)["type"] == "ack":
                self.armed = False
                cut = True
                server_side.close()
                page_side.close(code=1012)
            else:
                page_side.send(frame)

        page_side.on_message(to_server)
        server_side.on_message(to_page)


def test_a_message_whose_ack_was_lost_is_resent_and_shown_once(live_server_process, make_user):
    base_url = live_server_process.base_url
    make_user("alice")
    make_user("bob")
    Room.objects.create(slug="lobby", name="Lobby")

    with chromium() as browser:
        alice = log_in(browser, base_url, "alice")
        network = LosingNetwork()
        alice.route_web_socket("**/ws/chat/**", network.route)
        bob = log_in(browser, base_url, "bob")
        open_room(alice, "Lobby")
        open_room(bob, "Lobby")
        send(bob, "first")
        expect(message_texts(alice)).to_have_text(["first"])

        network.armed = True
        send(alice, "lost ack")
        expect(message_texts(bob)).to_have_text(["first", "lost ack"])
        for page in (alice, bob):
            expect(message_texts(page)).to_have_text(["first", "lost ack"])
        expect(outbox(alice)).to_have_count(0)
        expect(alice.locator("#connection")).to_have_text("Connected")

        # The reconnect resumed at or before the last message seen (ids seen live in the last seconds are asked
        # for again: broadcasts from several processes may arrive out of id order), and resent the same client_id.
        first_id = int(messages(alice).first.get_attribute("data-id"))
        path, _, after = network.urls[1].partition("?after=")
        assert path.endswith("/ws/chat/lobby/")
        assert 0 <= int(after) <= first_id
        sends = [frame for frame in network.sent if frame["type"] == "message"]
        assert [frame["text"] for frame in sends] == ["lost ack", "lost ack"]
        assert sends[0]["client_id"] == sends[1]["client_id"]

    assert Message.objects.filter(text="lost ack").count() == 1
