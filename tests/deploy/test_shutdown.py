"""Graceful shutdown end to end, as Kubernetes does it: a real `manage.py serve` process gets SIGTERM while a
WebSocket is open and a slow request is in flight.

tests/chat/test_multiprocess.py checks the drain and the 1012 close; this adds the request in flight (it must
complete), that the server stops accepting connections once the drain ends, and that the grace period bounds the
whole stop, which is what terminationGracePeriodSeconds in k8s/web.yaml is computed from.
"""

import asyncio
import http.client
import json
import signal
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import websockets

from chat.models import Room
from tests.conftest import child_process_env
from tests.helpers import ServerProcess, http_json, open_websocket

pytestmark = pytest.mark.django_db(transaction=True)

DRAIN_SECONDS = 2
SLOW_SECONDS = 5  # longer than the drain: the request is still running when the server starts to stop


@pytest.fixture
def slow_server(tmp_path):
    servers = []

    def start(*serve_args: str) -> ServerProcess:
        env = child_process_env(DJANGO_SETTINGS_MODULE="tests.deploy.slow_settings")
        server = ServerProcess(env, tmp_path / f"server-{len(servers)}.log", serve_args=serve_args)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def access_token(make_user, issue_tokens) -> str:
    """A user's access token, and the room their socket joins."""
    Room.objects.create(slug="lobby", name="Lobby")
    return issue_tokens(make_user("alice")).access_token


async def open_socket(server: ServerProcess, access_token: str):
    socket = await open_websocket(server, access_token, "/ws/chat/lobby/")
    welcome = await asyncio.wait_for(socket.recv(), 10)
    assert '"welcome"' in welcome
    return socket


def timed_request(url: str, timeout: float) -> tuple[int | None, bytes | str, float]:
    """(status, raw body, when it ended); status None when the connection failed."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read(), time.monotonic()
    except urllib.error.HTTPError as error:
        return error.code, error.read(), time.monotonic()
    except (urllib.error.URLError, OSError) as exc:
        return None, repr(exc), time.monotonic()


async def test_sigterm_drains_then_finishes_requests_in_flight_and_closes_sockets_with_1012(slow_server, access_token):
    server = slow_server("--drain-seconds", str(DRAIN_SECONDS), "--graceful-seconds", "20")
    socket = await open_socket(server, access_token)

    in_flight = asyncio.create_task(
        asyncio.to_thread(timed_request, f"{server.base_url}/slow?seconds={SLOW_SECONDS}", 30)
    )
    await asyncio.sleep(0.5)  # the request has reached the view
    server.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()

    # Draining: still serving, but no longer ready, so the load balancer takes the pod out.
    await asyncio.sleep(0.3)
    status, body = await asyncio.to_thread(http_json, f"{server.base_url}/ready")
    assert (status, body["code"]) == (503, "shutting_down")
    assert (await asyncio.to_thread(http_json, f"{server.base_url}/health"))[0] == 200

    # The drain ends: sockets are told to reconnect elsewhere.
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(socket.recv(), 15)
    closed = time.monotonic()
    assert socket.close_code == 1012
    assert closed - signalled >= DRAIN_SECONDS - 0.2

    # No new connections once the drain is over, while the slow request is still being served.
    assert not in_flight.done()
    with pytest.raises(OSError):
        await asyncio.to_thread(http_json, f"{server.base_url}/health", timeout=2)

    status, body, finished = await in_flight
    assert (status, json.loads(body)) == (200, {"slept": SLOW_SECONDS})
    assert finished > closed, "the request was in flight when the server began to stop"
    assert await asyncio.to_thread(server.process.wait, 20) == 0


async def test_the_grace_period_bounds_the_stop_even_with_a_request_that_never_ends(slow_server):
    """Kubernetes sends SIGKILL at the end of terminationGracePeriodSeconds: the server must be gone by then, so
    its grace period (not the slowest request) decides how long a stop takes."""
    server = slow_server("--drain-seconds", "0", "--graceful-seconds", "1")
    in_flight = asyncio.create_task(asyncio.to_thread(timed_request, f"{server.base_url}/slow?seconds=120", 60))
    await asyncio.sleep(0.5)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(server.process.wait, 15) == 0
    assert time.monotonic() - signalled < 1 + 5
    status, _, _ = await in_flight
    assert status != 200, "the request cut off by the grace period cannot have completed"


def test_keep_alive_clients_are_sent_elsewhere_during_the_drain_and_no_request_is_dropped(slow_server):
    """Clients that keep their connections open (a load balancer's, a service mesh's) would otherwise go on sending
    on them until the shutdown closes them, and a request sent just then is lost. During the drain every answer
    says `Connection: close`; like a load balancer that has taken the pod out, the clients open no new connection
    once the drain is over, but go on using those they hold."""
    server = slow_server("--drain-seconds", str(DRAIN_SECONDS), "--graceful-seconds", "5")
    outcomes: list[tuple[float, str]] = []
    signalled = [float("inf")]
    lock = threading.Lock()

    def record(outcome: str) -> None:
        with lock:
            outcomes.append((time.monotonic(), outcome))

    def client() -> None:
        connection = None
        while server.process.poll() is None:
            if connection is None:
                if time.monotonic() > signalled[0] + DRAIN_SECONDS:
                    return
                connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            try:
                connection.request("GET", "/health")
                response = connection.getresponse()
                response.read()
            except ConnectionRefusedError:
                return
            except (http.client.HTTPException, OSError):
                record("dropped")
                connection.close()
                connection = None
                continue
            told_to_close = response.getheader("Connection", "").lower() == "close"
            record("close" if told_to_close else "keep-alive")
            if told_to_close:
                connection.close()
                connection = None
            time.sleep(0.01)

    with ThreadPoolExecutor(8) as pool:
        clients = [pool.submit(client) for _ in range(8)]
        time.sleep(1)
        signalled[0] = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        for running in clients:
            running.result(timeout=30)
    assert server.process.wait(20) == 0

    after_the_signal = [outcome for at, outcome in outcomes if at > signalled[0] + 0.2]
    dropped = [at - signalled[0] for at, outcome in outcomes if outcome == "dropped"]
    assert dropped == [], f"{len(dropped)} requests dropped, at these seconds after the signal: {dropped}"
    assert after_the_signal and set(after_the_signal) == {"close"}, set(after_the_signal)
    assert "keep-alive" in [outcome for at, outcome in outcomes if at < signalled[0]]
