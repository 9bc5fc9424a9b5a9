"""The operator's console, driven in a real headless Chromium against a real server: what staff do to an
account in the Django admin must be felt at once by the API clients holding that account's tokens.

Playwright's sync API marks an event loop as running on this thread while the browser is open, and Django
refuses ORM calls from such a thread: each test sets up its data first and opens the browser afterwards."""

import contextlib
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.conftest import DEFAULT_PASSWORD
from tests.helpers import http_json

pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]


@contextlib.contextmanager
def admin_session(base_url: str, username: str, password: str = DEFAULT_PASSWORD) -> Iterator[Page]:
    """A browser page logged in to the admin through its login form, as staff would."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            page.goto(f"{base_url}/admin/")
            # Anonymous visitors are sent to the login form.
            expect(page).to_have_url(f"{base_url}/admin/login/?next=/admin/")
            page.get_by_label("Username").fill(username)
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("heading", name="Site administration")).to_be_visible()
            yield page
        finally:
            browser.close()


def open_user_in_changelist(page: Page, username: str):
    """From the admin index, the users list searched for `username`; returns that user's row."""
    page.get_by_role("link", name="Users", exact=True).click()
    expect(page.get_by_role("heading", name="Select user to change")).to_be_visible()
    page.locator("#searchbar").fill(username)
    page.get_by_role("button", name="Search").click()
    rows = page.locator("#result_list tbody tr")
    # The search narrowed the list to that one user.
    expect(rows).to_have_count(1)
    expect(rows.first.locator("th.field-username")).to_have_text(username)
    return rows.first


def run_action(page: Page, row, action: str) -> None:
    row.locator("input.action-select").check()
    page.locator("select[name=action]").select_option(label=action)
    page.get_by_role("button", name="Go").click()


def log_in_via_api(base_url: str, username: str) -> dict:
    status, body = http_json(
        f"{base_url}/api/v1/auth/token",
        method="POST",
        body={"username": username, "password": DEFAULT_PASSWORD},
    )
    assert status == 200, body
    return body


def me_status(base_url: str, access_token: str) -> int:
    return http_json(f"{base_url}/api/v1/users/me", headers={"Authorization": f"Bearer {access_token}"})[0]


def refresh_status(base_url: str, refresh_token: str) -> int:
    return http_json(f"{base_url}/api/v1/auth/refresh", method="POST", body={"refresh_token": refresh_token})[0]


@pytest.fixture
def staff_user(make_user):
    return make_user("operator", is_staff=True, is_superuser=True)


def test_deactivating_a_user_in_the_admin_ends_their_api_sessions(live_server_process, staff_user, make_user):
    base_url = live_server_process.base_url
    make_user("mallory")
    make_user("malcolm")  # shares a prefix: the search must still single out mallory
    tokens = log_in_via_api(base_url, "mallory")
    assert me_status(base_url, tokens["access_token"]) == 200

    with admin_session(base_url, staff_user.username) as page:
        row = open_user_in_changelist(page, "mallory")
        expect(row.locator("td.field-is_active img")).to_have_attribute("alt", "True")

        run_action(page, row, "Deactivate (and log out everywhere)")

        expect(page.locator("ul.messagelist li")).to_have_text("Deactivated 1 user(s); their tokens no longer work.")
        # Back on the same search, the row now shows the account inactive.
        row = page.locator("#result_list tbody tr").filter(has_text="mallory")
        expect(row.locator("td.field-is_active img")).to_have_attribute("alt", "False")

    # Both halves of the pair issued before the deactivation are dead, without waiting for them to expire.
    assert me_status(base_url, tokens["access_token"]) == 401
    assert refresh_status(base_url, tokens["refresh_token"]) == 401
    # And the account cannot log in again.
    status, _ = http_json(
        f"{base_url}/api/v1/auth/token", method="POST", body={"username": "mallory", "password": DEFAULT_PASSWORD}
    )
    assert status == 401


def test_log_out_everywhere_ends_sessions_but_keeps_the_account(live_server_process, staff_user, make_user):
    base_url = live_server_process.base_url
    make_user("trent")
    phone = log_in_via_api(base_url, "trent")
    laptop = log_in_via_api(base_url, "trent")

    with admin_session(base_url, staff_user.username) as page:
        row = open_user_in_changelist(page, "trent")
        run_action(page, row, "Log out everywhere")

        expect(page.locator("ul.messagelist li")).to_have_text("Logged out 1 user(s) everywhere.")
        row = page.locator("#result_list tbody tr").filter(has_text="trent")
        expect(row.locator("td.field-is_active img")).to_have_attribute("alt", "True")

    for session in (phone, laptop):
        assert me_status(base_url, session["access_token"]) == 401
        assert refresh_status(base_url, session["refresh_token"]) == 401
    # The account itself is untouched: a fresh login works.
    fresh = log_in_via_api(base_url, "trent")
    assert me_status(base_url, fresh["access_token"]) == 200


def test_user_change_page_lists_token_families_read_only(live_server_process, staff_user, make_user):
    base_url = live_server_process.base_url
    make_user("walter")
    log_in_via_api(base_url, "walter")
    ended = log_in_via_api(base_url, "walter")
    status, _ = http_json(
        f"{base_url}/api/v1/auth/logout",
        method="POST",
        body={"refresh_token": ended["refresh_token"]},
        headers={"Authorization": f"Bearer {ended['access_token']}"},
    )
    assert status == 204

    with admin_session(base_url, staff_user.username) as page:
        open_user_in_changelist(page, "walter").get_by_role("link", name="walter").click()
        expect(page.get_by_role("heading", name="walter")).to_be_visible()

        inline = page.locator(".inline-group").filter(has_text="refresh token families (one per login)")
        expect(inline).to_be_visible()
        families = inline.locator("tbody tr.has_original")
        # One row per login, the logged-out one marked as such.
        expect(families).to_have_count(2)
        expect(families.locator("td.field-revoked_reason")).to_have_text(["logged out", "-"])
        # Read only: nothing to type into, no way to add or delete a family from here.
        expect(inline.locator("input:not([type=hidden]), select, textarea")).to_have_count(0)
        expect(inline.get_by_text("Add another")).to_be_hidden()


def test_unticking_active_on_the_change_page_ends_api_sessions(live_server_process, staff_user, make_user):
    base_url = live_server_process.base_url
    make_user("victor")
    tokens = log_in_via_api(base_url, "victor")

    with admin_session(base_url, staff_user.username) as page:
        open_user_in_changelist(page, "victor").get_by_role("link", name="victor").click()
        # The read-only token families inline is part of the form being saved; it must not get in the way.
        page.get_by_label("Active").uncheck()
        page.get_by_role("button", name="Save", exact=True).click()

        expect(page.locator("ul.messagelist li")).to_contain_text("was changed successfully")
        row = page.locator("#result_list tbody tr").filter(has_text="victor")
        expect(row.locator("td.field-is_active img")).to_have_attribute("alt", "False")

    # The form revokes exactly as the action does.
    assert me_status(base_url, tokens["access_token"]) == 401
    assert refresh_status(base_url, tokens["refresh_token"]) == 401
