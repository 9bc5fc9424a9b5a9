"""No token, ticket, password, cookie or signature reaches a log line: each is sent to a real server process in
every place a client can put it (headers, query string, body, the WebSocket handshake), including requests that are
refused and logged as errors, and the server's whole log is searched for it."""

import asyncio
import json
import urllib.request

import pytest
import websockets
from django.core import signing

from tests.helpers import http_json

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct horse battery staple"


def _raw(url: str, *, method: str = "GET", body: bytes | None = None, headers: dict | None = None) -> int:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_no_secret_a_client_sends_reaches_the_log(live_server_process, make_user):
    server = live_server_process
    make_user("leaky", password=PASSWORD)
    status, pair = http_json(
        f"{server.base_url}/api/v1/auth/token", method="POST", body={"username": "leaky", "password": PASSWORD}
    )
    assert status == 200, pair
    access, refresh = pair["access_token"], pair["refresh_token"]
    status, ticket = http_json(
        f"{server.base_url}/api/v1/chat/tickets", method="POST", headers={"Authorization": f"Bearer {access}"}
    )
    assert status == 200
    session_cookie = signing.dumps({"session": "value"}, salt="test")
    secrets = {"access": access, "refresh": refresh, "password": PASSWORD, "ticket": ticket["ticket"]}
    secrets["cookie"] = session_cookie

    base = server.base_url
    # Headers: an unknown auth scheme (logged as an error by ninja's bearer auth), a bad token, cookies.
    for authorization in (f"Token {access}", f"Basic {access}", f"Bearer {access}x", f"Bearer {refresh}"):
        assert _raw(f"{base}/api/v1/users/me", headers={"Authorization": authorization}) == 401
    _raw(f"{base}/api/v1/users/me", headers={"Cookie": f"sessionid={session_cookie}; csrftoken={session_cookie}"})
    # The query string of API requests, refused or not.
    query = f"access_token={access}&password={PASSWORD.replace(' ', '+')}&ticket={ticket['ticket']}"
    _raw(f"{base}/api/v1/users/me?{query}")
    _raw(f"{base}/api/v1/no-such-path?{query}")
    # Bodies: a wrong password, a refresh token used twice (the second is a reuse, revoking the family), a body
    # that is not JSON.
    wrong = json.dumps({"username": "leaky", "password": PASSWORD + "!"}).encode()
    headers = {"Content-Type": "application/json"}
    assert _raw(f"{base}/api/v1/auth/token", method="POST", body=wrong, headers=headers) == 401
    again = json.dumps({"refresh_token": refresh}).encode()
    _raw(f"{base}/api/v1/auth/refresh", method="POST", body=again, headers=headers)
    _raw(f"{base}/api/v1/auth/refresh", method="POST", body=again, headers=headers)
    broken = f'{{"password": "{PASSWORD}", "refresh_token": "{refresh}"'.encode()
    assert _raw(f"{base}/api/v1/auth/token", method="POST", body=broken, headers=headers) == 400

    # The WebSocket handshake: the ticket in the query string, once used and once replayed.
    async def handshakes():
        for _ in range(2):
            socket = await websockets.connect(
                f"ws://127.0.0.1:{server.port}/ws/notifications/?ticket={ticket['ticket']}"
            )
            await socket.close()

    asyncio.run(handshakes())

    server.stop()
    log = server.log_path.read_text()
    for name, secret in secrets.items():
        assert secret not in log, f"the {name} reached the log"
    for name in ("access", "refresh"):
        # Not even the token's signature part.
        assert secrets[name].rsplit(".", 1)[1] not in log, f"the {name} token's signature reached the log"
    # What carried them was logged all the same, without them.
    assert "Unexpected auth" in log and "ticket=[redacted]" in log


@pytest.mark.parametrize(
    ("line", "kept"),
    [
        ("Unexpected auth - 'Token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl'", "Unexpected auth - 'Token "),
        ('127.0.0.1:5 - "WebSocket /ws/chat/general/?ticket=abc123&after=5" [accepted]', "&after=5"),
        ("{'username': 'x', 'password': 'hunter2 again'}", "'username': 'x'"),
        ('{"new_password": "p\\"w", "a": 1}', '"a": 1'),
        ("Cookie: sessionid=abcdef123; csrftoken=zzz", "Cookie: "),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic "),
    ],
)
def test_the_filter_keeps_the_line_and_drops_the_secret(line, kept):
    from core.logging import redact_secrets

    redacted = redact_secrets(line)
    assert kept in redacted and "[redacted]" in redacted
    for secret in ("c2lnbmF0dXJl", "abc123", "hunter2", 'p\\"w', "abcdef123", "zzz", "dXNlcjpwYXNz"):
        assert secret not in redacted
