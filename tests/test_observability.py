"""Observability end to end: traces exported over real OTLP/HTTP by a real server and a real Celery worker,
metrics scraped from real server processes (and by a real Prometheus), JSON log lines from a real server."""

import asyncio
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import websockets
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from chat.models import Room
from tests.conftest import DEFAULT_PASSWORD, child_process_env
from tests.helpers import (
    PROJECT_ROOT,
    PYTHON,
    ServerProcess,
    WorkerProcess,
    clean_env,
    free_port,
    http_json,
    open_websocket,
    stop_process,
)

pytestmark = pytest.mark.django_db(transaction=True)

REGISTER = "/api/v1/auth/register"
DEADLINE_SECONDS = 30
# A W3C trace context a client (or a proxy) might send; its trace id must reach our logs and spans.
CLIENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_TRACEPARENT = f"00-{CLIENT_TRACE_ID}-00f067aa0ba902b7-01"


class OtlpReceiver:
    """A minimal OTLP/HTTP trace receiver (protobuf over POST /v1/traces), as a collector would be."""

    def __init__(self) -> None:
        self.spans: list[dict] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._add(request)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _add(self, request: ExportTraceServiceRequest) -> None:
        with self._lock:
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append(
                            {
                                "name": span.name,
                                "kind": span.kind,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent_span_id": span.parent_span_id.hex(),
                                "attributes": {a.key: _value(a.value) for a in span.attributes},
                                "resource": resource,
                            }
                        )

    def wait_for(self, predicate, what: str, count: int = 1) -> list[dict]:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            with self._lock:
                found = [span for span in self.spans if predicate(span)]
            if len(found) >= count:
                return found
            time.sleep(0.1)
        pytest.fail(f"no {what} span within {DEADLINE_SECONDS}s; received: {[s['name'] for s in self.spans]}")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(value):
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture
def otlp_receiver():
    receiver = OtlpReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def child_process_overrides(otlp_receiver):
    # Server and worker export to the same collector, promptly (the default batch delay is 5 s).
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SERVICE_NAME": "backend-under-test",
    }


def _descends_from(span: dict, ancestor: dict, spans: list[dict]) -> bool:
    spans_by_id = {s["span_id"]: s for s in spans if s["trace_id"] == span["trace_id"]}
    while span["parent_span_id"] in spans_by_id:
        span = spans_by_id[span["parent_span_id"]]
        if span["span_id"] == ancestor["span_id"]:
            return True
    return False


async def _open_chat(server, access_token: str, slug: str, headers: dict | None = None):
    """A WebSocket client in a chat room, past the welcome."""
    socket = await open_websocket(server, access_token, f"/ws/chat/{slug}/", additional_headers=headers or {})
    await _receive_until(socket, lambda event: event["type"] == "welcome")
    return socket


async def _receive_until(socket, predicate) -> dict:
    async with asyncio.timeout(DEADLINE_SECONDS):
        while True:
            event = json.loads(await socket.recv())
            if predicate(event):
                return event


async def _send_chat_message(socket, text: str, client_id: str | None = None) -> int:
    client_id = client_id or str(uuid.uuid4())
    await socket.send(json.dumps({"type": "message", "text": text, "client_id": client_id}))
    ack = await _receive_until(socket, lambda event: event["type"] == "ack" and event["client_id"] == client_id)
    return ack["id"]


def _register(base_url: str, username: str, headers: dict | None = None) -> tuple[int, dict]:
    return http_json(
        f"{base_url}{REGISTER}",
        method="POST",
        body={"username": username, "email": f"{username}@example.com", "password": DEFAULT_PASSWORD},
        headers=headers,
    )


# --- traces -------------------------------------------------------------------------------------------------


def test_a_request_its_queries_and_the_task_it_enqueues_share_one_trace(
    configured_live_server_process, celery_worker_process, otlp_receiver
):
    status, _ = _register(configured_live_server_process.base_url, "traced")
    assert status == 201

    request_span = otlp_receiver.wait_for(
        lambda s: s["name"] == f"POST {REGISTER}" and s["resource"].get("service.role") == "web", "request"
    )[0]
    assert request_span["attributes"]["http.route"] == REGISTER
    assert request_span["resource"]["service.name"] == "backend-under-test"
    trace_id = request_span["trace_id"]

    task_span = otlp_receiver.wait_for(lambda s: s["name"] == "run/accounts.tasks.send_welcome_email", "Celery task")[
        0
    ]
    assert task_span["trace_id"] == trace_id
    assert task_span["resource"]["service.role"] == "worker"

    # The INSERT of the new user is a descendant of the request span, in the same trace.
    spans_by_id = {s["span_id"]: s for s in otlp_receiver.spans if s["trace_id"] == trace_id}

    def descends_from_request(span) -> bool:
        while span["parent_span_id"] in spans_by_id:
            span = spans_by_id[span["parent_span_id"]]
            if span["span_id"] == request_span["span_id"]:
                return True
        return False

    queries = otlp_receiver.wait_for(
        lambda s: s["trace_id"] == trace_id and s["attributes"].get("db.system") == "postgresql", "database"
    )
    spans_by_id = {s["span_id"]: s for s in otlp_receiver.spans if s["trace_id"] == trace_id}
    inserts = [q for q in queries if q["name"].startswith("INSERT") and descends_from_request(q)]
    assert inserts, [q["name"] for q in queries]
    # Statements are exported with placeholders: the password hash and the e-mail never leave the process.
    assert not any("traced@example.com" in json.dumps(q["attributes"]) for q in queries)


def test_a_client_trace_context_is_continued(configured_live_server_process, otlp_receiver):
    status, _ = http_json(
        f"{configured_live_server_process.base_url}/api/v1/users/1", headers={"traceparent": CLIENT_TRACEPARENT}
    )
    assert status == 404
    spans = otlp_receiver.wait_for(lambda s: s["name"].startswith("GET /api/v1/users/"), "request")
    assert spans[0]["trace_id"] == CLIENT_TRACE_ID


@pytest.fixture
def chat_member(make_user, issue_tokens):
    """A room, a user, and an access token of theirs."""
    room = Room.objects.create(slug="observed", name="Observed")
    user = make_user("chatter")
    return room, user, issue_tokens(user).access_token


async def test_chat_frames_continue_the_handshake_trace_and_a_message_send_has_a_span_of_its_own(
    configured_live_server_process, otlp_receiver, chat_member
):
    server = configured_live_server_process
    room, user, access = chat_member
    text = "words that belong to the room alone"
    socket = await _open_chat(server, access, room.slug, {"traceparent": CLIENT_TRACEPARENT})
    try:
        message_id = await _send_chat_message(socket, text)
    finally:
        await socket.close()

    send = (await asyncio.to_thread(otlp_receiver.wait_for, lambda s: s["name"] == "chat.message_send", "send"))[0]
    assert send["trace_id"] == CLIENT_TRACE_ID
    assert send["attributes"] == {
        "chat.room_id": room.pk,
        "enduser.id": str(user.pk),
        "chat.message_id": message_id,
        "chat.duplicate": False,
    }
    # Its parent is the span of the frame that carried the message, whose parent is the client's span.
    frame = next(s for s in otlp_receiver.spans if s["span_id"] == send["parent_span_id"])
    assert frame["name"] == "websocket receive message"
    assert frame["parent_span_id"] == CLIENT_TRACEPARENT.split("-")[2]
    # The INSERT runs under the send span (through the consumer's thread hop into the ORM).
    insert = await asyncio.to_thread(
        otlp_receiver.wait_for,
        lambda s: (
            s["trace_id"] == CLIENT_TRACE_ID
            and s["name"].startswith("INSERT")
            and _descends_from(s, send, otlp_receiver.spans)
        ),
        "INSERT under the send",
    )
    assert insert
    assert text not in json.dumps(otlp_receiver.spans)


def test_token_refresh_has_a_span_with_the_outcome_and_never_a_token(
    configured_live_server_process, otlp_receiver, make_user, issue_tokens
):
    user = make_user("refresher")
    refresh_token = issue_tokens(user).refresh_token
    url = f"{configured_live_server_process.base_url}/api/v1/auth/refresh"
    status, rotated = http_json(url, method="POST", body={"refresh_token": refresh_token})
    assert status == 200
    # The same token again: reuse of a rotated token, refused.
    assert http_json(url, method="POST", body={"refresh_token": refresh_token})[0] == 401

    spans = otlp_receiver.wait_for(lambda s: s["name"] == "token.refresh", "token.refresh", count=2)
    # The request spans end after their children, and may reach the receiver in a later batch.
    otlp_receiver.wait_for(lambda s: s["name"] == "POST /api/v1/auth/refresh", "the request spans", count=2)
    outcomes = sorted(span["attributes"]["token.outcome"] for span in spans)
    assert outcomes == ["reuse", "rotated"]
    assert all(span["attributes"]["enduser.id"] == str(user.pk) for span in spans)
    # Each is a child of its request's span.
    for span in spans:
        parent = next(s for s in otlp_receiver.spans if s["span_id"] == span["parent_span_id"])
        assert parent["name"] == "POST /api/v1/auth/refresh"
    exported = json.dumps(otlp_receiver.spans)
    for token in (refresh_token, rotated["refresh_token"], rotated["access_token"]):
        assert token not in exported
        assert token.split(".")[2] not in exported


# --- logs ---------------------------------------------------------------------------------------------------


def test_log_lines_carry_request_trace_and_span_ids_and_one_access_line(configured_live_server_process):
    connection = http.client.HTTPConnection("127.0.0.1", configured_live_server_process.port, timeout=10)
    connection.request(
        "GET",
        "/api/v1/users/me?secret=hidden",
        headers={"Authorization": "Bearer garbage", "X-Request-ID": "log-trace-1", "traceparent": CLIENT_TRACEPARENT},
    )
    assert connection.getresponse().status == 401

    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        lines = [e for e in configured_live_server_process.log_lines() if e.get("request_id") == "log-trace-1"]
        access = [e for e in lines if e["logger"] == "access"]
        if access or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(access) == 1, lines
    line = access[0]
    assert line["method"] == "GET" and line["path"] == "/api/v1/users/me" and line["status"] == 401
    assert isinstance(line["duration_ms"], float)
    assert "secret=hidden" not in json.dumps(lines)
    for entry in lines:
        assert {"timestamp", "level", "logger", "message", "request_id"} <= set(entry)
        assert entry["trace_id"] == CLIENT_TRACE_ID
        assert len(entry["span_id"]) == 16
    # The auth failure is logged inside the request, under the same span as the access line.
    assert {entry["span_id"] for entry in lines} == {line["span_id"]}


def test_log_lines_carry_the_user_id_once_authenticated(live_server_process, make_user, bearer):
    user = make_user()
    status, _ = http_json(
        f"{live_server_process.base_url}/api/v1/users/me", headers={**bearer(user), "X-Request-ID": "log-user-1"}
    )
    assert status == 200
    deadline = time.monotonic() + DEADLINE_SECONDS
    access = []
    while not access and time.monotonic() < deadline:
        access = [
            e
            for e in live_server_process.log_lines()
            if e.get("request_id") == "log-user-1" and e["logger"] == "access"
        ]
        time.sleep(0.1)
    assert access and access[0]["user_id"] == user.pk
    # Untraced (no exporter configured): no ids are invented.
    assert "trace_id" not in access[0]


def test_worker_logs_are_json_with_the_enqueuing_request_id(
    configured_live_server_process, celery_worker_process, otlp_receiver
):
    status, _ = _register(configured_live_server_process.base_url, "logged", headers={"X-Request-ID": "enqueue-1"})
    assert status == 201
    deadline = time.monotonic() + DEADLINE_SECONDS
    task_lines = []
    while not task_lines and time.monotonic() < deadline:
        entries = [json.loads(line) for line in celery_worker_process.log().splitlines() if line.startswith("{")]
        task_lines = [e for e in entries if e.get("request_id") == "enqueue-1"]
        time.sleep(0.1)
    assert task_lines, celery_worker_process.log()
    task_span = otlp_receiver.wait_for(lambda s: s["name"] == "run/accounts.tasks.send_welcome_email", "task")[0]
    assert any(e.get("trace_id") == task_span["trace_id"] for e in task_lines)


_LOG_SOME_LINES = """
import logging, django
django.setup()
from core.logging import request_id_var
request_id_var.set("console-1")
logging.getLogger("demo").info("an info line")
logging.getLogger("demo").warning("a warning, %s", "plainly")
"""


def _logged(tmp_path, **env: str) -> list[str]:
    result = subprocess.run(
        [PYTHON, "-c", _LOG_SOME_LINES],
        cwd=PROJECT_ROOT,
        env=clean_env(DJANGO_SETTINGS_MODULE="config.settings", DJANGO_DATA_DIR=str(tmp_path), **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [line for line in (result.stdout + result.stderr).splitlines() if "demo" in line]


def test_log_level_and_a_plain_console_format_for_local_development(tmp_path):
    lines = _logged(tmp_path, LOG_FORMAT="console", LOG_LEVEL="warning")
    assert len(lines) == 1, lines
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING demo \[console-1\] a warning, plainly", lines[0]
    )

    lines = _logged(tmp_path, LOG_LEVEL="DEBUG")
    entries = [json.loads(line) for line in lines]
    assert [(e["level"], e["message"], e["request_id"]) for e in entries] == [
        ("INFO", "an info line", "console-1"),
        ("WARNING", "a warning, plainly", "console-1"),
    ]


# --- metrics ------------------------------------------------------------------------------------------------


def _scrape(base_url: str, headers: dict | None = None) -> dict[tuple[str, tuple], float]:
    request = urllib.request.Request(f"{base_url}/metrics", headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _requests_for_view(samples, view: str, method: str = "GET") -> float:
    key = (
        "django_http_requests_total_by_view_transport_method_total",
        (("method", method), ("transport", "http"), ("view", view)),
    )
    return samples.get(key, 0.0)


def _sample(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# Samples a process of an earlier run left behind (it was killed: no exit hook), for the metrics of ours that a
# new run must not inherit.
_LEAVE_STALE_SAMPLES = """
import os
from prometheus_client import Counter, Gauge
Counter("chat_messages_sent_total", "").inc(1000)
Counter("celery_tasks_total", "", ["task", "outcome"]).labels("accounts.tasks.send_welcome_email", "success").inc(1000)
Gauge("websocket_connections_open", "", ["consumer"], multiprocess_mode="livesum").labels("chat").inc(7)
os._exit(0)
"""


def _leave_stale_samples(directory) -> None:
    directory.mkdir(exist_ok=True)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    subprocess.run([PYTHON, "-c", _LEAVE_STALE_SAMPLES], env=env, check=True, timeout=60)
    assert len(list(directory.glob("*.db"))) == 2


@pytest.fixture
def metrics_dir(tmp_path):
    """A PROMETHEUS_MULTIPROC_DIR as a restarted pod finds it: with the files of an earlier run in it."""
    directory = tmp_path / "prometheus"
    _leave_stale_samples(directory)
    return directory


@pytest.fixture
def multiprocess_server(transactional_db, tmp_path, metrics_dir):
    """Two server processes sharing the port, summing their metrics through PROMETHEUS_MULTIPROC_DIR."""
    env = child_process_env(PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    server = ServerProcess(env, tmp_path / "server.log", serve_args=("--drain-seconds", "0", "--workers", "2"))
    yield server
    server.stop()


def _wait_for_sample(base_url: str, name: str, labels: dict, expected: float) -> dict:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        try:
            samples = _scrape(base_url)
        except OSError:
            samples = {}
        if _sample(samples, name, **labels) == expected or time.monotonic() > deadline:
            assert _sample(samples, name, **labels) == expected, samples
            return samples
        time.sleep(0.2)


async def test_open_websockets_and_chat_messages_are_counted(live_server_process, chat_member):
    server = live_server_process
    room, _, access = chat_member
    scrape = lambda: asyncio.to_thread(_scrape, server.base_url)  # noqa: E731
    before = await scrape()
    assert _sample(before, "websocket_connections_open", consumer="chat") == 0
    socket = await _open_chat(server, access, room.slug)
    try:
        assert _sample(await scrape(), "websocket_connections_open", consumer="chat") == 1
        await _send_chat_message(socket, "one")
        client_id = str(uuid.uuid4())
        await _send_chat_message(socket, "two", client_id)
        # A resend of a message already stored (a client retrying after a lost ack) is not a new message.
        await _send_chat_message(socket, "two", client_id)
        during = await scrape()
    finally:
        await socket.close()
    sent = "chat_messages_sent_total"
    assert _sample(during, sent) - _sample(before, sent) == 2
    await asyncio.to_thread(_wait_for_sample, server.base_url, "websocket_connections_open", {"consumer": "chat"}, 0.0)


def test_request_counter_totals_are_right_across_server_processes(multiprocess_server):
    before = _scrape(multiprocess_server.base_url)
    for _ in range(12):
        # A fresh connection each time, so the kernel spreads them over both processes.
        assert http_json(f"{multiprocess_server.base_url}/api/v1/users/1")[0] == 404
    after = _scrape(multiprocess_server.base_url)
    view = "api-1:user"
    assert _requests_for_view(after, view) - _requests_for_view(before, view) == 12
    latency = ("django_http_requests_latency_seconds_by_view_method_count", (("method", "GET"), ("view", view)))
    assert after[latency] - before.get(latency, 0) == 12


async def test_a_restart_starts_from_zero_and_a_killed_process_connections_stop_counting(
    multiprocess_server, metrics_dir, chat_member
):
    server = multiprocess_server
    room, _, access = chat_member
    scrape = lambda: asyncio.to_thread(_scrape, server.base_url)  # noqa: E731
    # The earlier run's 1000 messages and 7 connections are gone: cleared before the server processes started.
    samples = await scrape()
    assert _sample(samples, "chat_messages_sent_total") == 0
    assert _sample(samples, "websocket_connections_open", consumer="chat") == 0

    socket = await _open_chat(server, access, room.slug)
    await _send_chat_message(socket, "before the crash")
    samples = await scrape()
    assert _sample(samples, "websocket_connections_open", consumer="chat") == 1
    # The process holding the connection is the one with a live-gauge file; kill it as the OOM killer would.
    (gauge_file,) = metrics_dir.glob("gauge_livesum_*.db")
    os.kill(int(gauge_file.stem.rsplit("_", 1)[1]), signal.SIGKILL)
    with pytest.raises(websockets.ConnectionClosed):
        await _receive_until(socket, lambda event: False)

    # Its connection no longer counts; the message it counted still does (totals never go down).
    samples = await asyncio.to_thread(
        _wait_for_sample, server.base_url, "websocket_connections_open", {"consumer": "chat"}, 0.0
    )
    assert _sample(samples, "chat_messages_sent_total") == 1


# Production's pool: tasks run, and are counted, in forked child processes.
PREFORK = ("--pool=prefork", "--concurrency=2")


def test_the_worker_serves_task_outcomes_and_durations_of_its_pool_processes(
    transactional_db, tmp_path, metrics_dir, make_user
):
    from accounts.tasks import send_welcome_email

    port = free_port()
    env = child_process_env(WORKER_METRICS_PORT=str(port), PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    worker = WorkerProcess(env, tmp_path / "worker.log", pool_options=PREFORK)
    try:
        user = make_user("welcomed")
        send_welcome_email.delay(user.pk)
        send_welcome_email.delay(user.pk)
        task = {"task": "accounts.tasks.send_welcome_email"}
        # Two runs, both successes (the second finds the e-mail already sent), counted in the pool processes and
        # served by the main one; the earlier run's 1000 are gone.
        samples = _wait_for_sample(
            f"http://127.0.0.1:{port}", "celery_tasks_total", {**task, "outcome": "success"}, 2.0
        )
        assert _sample(samples, "celery_task_duration_seconds_count", **task) == 2
        assert _sample(samples, "celery_task_duration_seconds_sum", **task) > 0
        assert not [key for key in samples if key[0] == "celery_tasks_total" and ("outcome", "success") not in key[1]]
    finally:
        worker.stop()


def test_a_prefork_worker_serving_metrics_without_the_directory_says_so(transactional_db, tmp_path):
    env = child_process_env(WORKER_METRICS_PORT=str(free_port()))
    worker = WorkerProcess(env, tmp_path / "worker.log", pool_options=PREFORK)
    try:
        errors = [
            entry
            for entry in (json.loads(line) for line in worker.log().splitlines() if line.startswith("{"))
            if entry["level"] == "ERROR"
        ]
    finally:
        worker.stop()
    assert [entry["message"] for entry in errors] == [
        "WORKER_METRICS_PORT is set but PROMETHEUS_MULTIPROC_DIR is not: a prefork pool's task metrics will not be "
        "served (README, Observability)"
    ]


def test_auth_failures_are_counted_by_reason(live_server_process, make_user):
    make_user(username="metered")
    status, _ = http_json(
        f"{live_server_process.base_url}/api/v1/auth/token",
        method="POST",
        body={"username": "metered", "password": "wrong password"},
    )
    assert status == 401
    status, _ = http_json(f"{live_server_process.base_url}/api/v1/users/me", headers={"Authorization": "Bearer x"})
    assert status == 401
    samples = _scrape(live_server_process.base_url)
    assert samples[("auth_failures_total", (("reason", "invalid_credentials"),))] == 1
    assert samples[("auth_failures_total", (("reason", "invalid_token"),))] == 1


def test_metrics_are_refused_outside_the_allowed_networks_unless_a_token_is_shown(transactional_db, tmp_path):
    env = child_process_env(METRICS_ALLOWED_NETWORKS="10.0.0.0/8", METRICS_TOKEN="scrape-secret")
    server = ServerProcess(env, tmp_path / "server.log")
    try:
        assert http_json(f"{server.base_url}/health")[0] == 200
        request = urllib.request.Request(f"{server.base_url}/metrics")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 403
        with pytest.raises(urllib.error.HTTPError) as wrong_token:
            urllib.request.urlopen(
                urllib.request.Request(f"{server.base_url}/metrics", headers={"Authorization": "Bearer nope"}),
                timeout=10,
            )
        assert wrong_token.value.code == 403
        assert _scrape(server.base_url, {"Authorization": "Bearer scrape-secret"})
    finally:
        server.stop()


def test_metrics_are_refused_through_a_proxy_even_from_an_allowed_address(live_server_process):
    request = urllib.request.Request(
        f"{live_server_process.base_url}/metrics", headers={"X-Forwarded-For": "203.0.113.9"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403
    assert _scrape(live_server_process.base_url)


# --- a real Prometheus --------------------------------------------------------------------------------------


def _prometheus_api(base: str, path: str, **params) -> dict:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_prometheus_scrapes_the_service(live_server_process, tmp_path):
    binary = shutil.which("prometheus")
    assert binary, "the prometheus binary is missing: apt-get install prometheus (.ci/run installs it)"
    for _ in range(3):
        assert http_json(f"{live_server_process.base_url}/health")[0] == 200
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n"
        "  - job_name: backend\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{live_server_process.port}']\n"
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "prometheus.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        up = series = None
        while time.monotonic() < deadline and not (up and series):
            time.sleep(0.5)
            try:
                targets = _prometheus_api(base, "/api/v1/targets")["data"]["activeTargets"]
                up = any(t["health"] == "up" for t in targets)
                result = _prometheus_api(
                    base,
                    "/api/v1/query",
                    query='django_http_requests_total_by_view_transport_method_total{view="health"}',
                )["data"]["result"]
                series = bool(result)
            except OSError:
                continue
        assert up, f"target never up; prometheus log:\n{log_path.read_text()[-3000:]}"
        assert series, "no request series for the health view"
        up_value = _prometheus_api(base, "/api/v1/query", query='up{job="backend"}')["data"]["result"]
        assert up_value and up_value[0]["value"][1] == "1"
    finally:
        stop_process(process)
