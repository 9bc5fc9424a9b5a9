"""The Content-Security-Policy (django-csp, config/settings.py) on every response, and every HTML page working under
it in a real headless Chromium: the admin, the chat pages (their socket included) and the API docs, with not one
violation reported.

Playwright's sync API marks an event loop as running on this thread while the browser is open, and Django
refuses ORM calls from such a thread: each test sets up its data first and opens the browser afterwards."""

import contextlib
import re
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.accounts.test_admin_browser import CHROMIUM, CHROMIUM_ARGS
from tests.chat.test_browser import fill_login_form
from tests.conftest import DEFAULT_PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)


@contextlib.contextmanager
def watched_page() -> Iterator[tuple[Page, list[str]]]:
    """A page, and the list of every Content-Security-Policy violation Chromium reports on it."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            violations: list[str] = []
            page.on(
                "console",
                lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None,
            )
            # Reported as DOM events too (a blocked inline style, an eval), which not every case logs.
            page.add_init_script(
                "document.addEventListener('securitypolicyviolation', event => "
                "console.error('Content Security Policy: ' + event.violatedDirective + ' ' + event.blockedURI))"
            )
            yield page, violations
        finally:
            browser.close()


def test_every_response_carries_the_policy(live_server_process):
    # (django-csp leaves out DEBUG's 404 and 500 pages, which the test server is: those answer without it there.)
    for path in ("/api/v2/posts", "/api/v2/docs", "/admin/login/", "/health"):
        status, headers = _head(live_server_process.base_url + path)
        policy = headers.get("content-security-policy", "")
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy, (path, status, headers)
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy


def _head(url: str) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, {name.lower(): value for name, value in response.headers.items()}
    except urllib.error.HTTPError as error:
        return error.code, {name.lower(): value for name, value in error.headers.items()}


def test_the_admin_works_under_the_policy(live_server_process, make_user):
    make_user(username="boss", is_staff=True, is_superuser=True)
    base = live_server_process.base_url
    with watched_page() as (page, violations):
        page.goto(f"{base}/admin/login/")
        fill_login_form(page, "boss")
        expect(page.get_by_role("heading", name="Site administration")).to_be_visible()
        for path, heading in (
            ("/admin/accounts/user/", "Select user to change"),
            ("/admin/accounts/user/add/", "Add user"),
            ("/admin/posts/post/add/", "Add post"),
        ):
            page.goto(f"{base}{path}")
            expect(page.get_by_role("heading", name=heading)).to_be_visible()
        # The admin's own scripts run: its theme toggle (admin/js/theme.js) switches the page's theme.
        page.get_by_role("button", name="Toggle theme").click()
        expect(page.locator("html")).to_have_attribute("data-theme", re.compile("^(dark|light)$"))
    assert violations == []


def test_the_chat_pages_work_under_the_policy(live_server_process, make_user):
    from chat.models import Room

    make_user(username="ada")
    Room.objects.create(slug="lobby", name="Lobby")
    base = live_server_process.base_url
    with watched_page() as (page, violations):
        page.goto(f"{base}/")
        fill_login_form(page, "ada")
        expect(page.get_by_role("heading", name="Rooms")).to_be_visible()
        page.get_by_role("link", name="Lobby", exact=True).click()
        # chat.js ran and its socket (connect-src 'self') is open.
        expect(page.locator("#connection")).to_have_text("Connected")
        page.get_by_role("textbox", name="Message").fill("under the policy")
        page.keyboard.press("Enter")
        expect(page.locator("#messages").get_by_text("under the policy")).to_be_visible()
    assert violations == []


def test_the_api_docs_work_under_the_policy_and_log_in_with_a_password(live_server_process, make_user):
    make_user(username="grace")
    with watched_page() as (page, violations):
        page.goto(f"{live_server_process.base_url}/api/v2/docs")
        # Swagger UI's scripts ran and drew the schema they fetched.
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("Backend API")
        # The Authorize dialog: the bearer token, and the password flow (accounts/api.py, password-grant).
        page.locator("button.authorize").first.click()
        dialog = page.locator(".modal-ux")
        expect(dialog.get_by_text("JWTAuth")).to_be_visible()
        dialog.locator("#oauth_username").fill("grace")
        dialog.locator("#oauth_password").fill(DEFAULT_PASSWORD)
        password_flow = dialog.locator(".auth-container:has(#oauth_username)")
        password_flow.get_by_role("button", name="Apply given OAuth2 credentials").click()
        expect(dialog.get_by_role("heading", name="Authorized")).to_be_visible()
        dialog.locator("button.close-modal").click()
        # An operation tried from the page carries the token the dialog obtained.
        operation = page.locator("#operations-users-accounts_api_me")
        operation.locator(".opblock-summary").click()
        operation.get_by_role("button", name="Try it out").click()
        operation.get_by_role("button", name="Execute").click()
        expect(operation.locator(".live-responses-table tbody .response-col_status").first).to_have_text("200")
        expect(operation.locator(".live-responses-table tbody .response-col_description")).to_contain_text('"grace"')
    assert violations == []
