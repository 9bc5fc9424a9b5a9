"""Webhook deliveries against a real HTTP receiver the test runs on 127.0.0.1 (so loopback is allowed here, as
WEBHOOK_ALLOW_LOOPBACK does for tests): signed, retried, cut off by the per-host circuit breaker, sent once however
often their task is delivered, and never sent to an address the SSRF guard refuses.

End-to-end tests publish through the API and a real Celery worker process sends; tests of one behaviour of an
attempt call the service the task calls, in this process."""

import contextlib
import hashlib
import hmac
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import connection
from django.urls import reverse

from core.keyvalue import MemoryKeyValue, RedisKeyValue
from posts.models import Post, PostStatus
from webhooks.models import WebhookDelivery, WebhookEndpoint
from webhooks.services.breaker import Breaker, get_breaker
from webhooks.services.delivery import delivery_attempt, retry_delay
from webhooks.services.dispatch import event_dispatch, webhook_deliveries_requeue_stalled
from webhooks.services.signing import new_secret
from webhooks.tasks import deliver_webhook, dispatch_webhook_event

pytestmark = pytest.mark.django_db(transaction=True)

WEBHOOKS = "/api/v1/webhooks"
DEADLINE_SECONDS = 30
# Small enough for tests to watch backoff, the breaker opening and cooling down; the worker gets the same.
WEBHOOK_SETTINGS = {
    "WEBHOOK_ALLOW_LOOPBACK": True,
    "WEBHOOK_RETRY_BASE_SECONDS": 1,
    "WEBHOOK_RETRY_MAX_SECONDS": 1,
    "WEBHOOK_MAX_ATTEMPTS": 3,
    "WEBHOOK_BREAKER_THRESHOLD": 3,
    "WEBHOOK_BREAKER_COOLDOWN_SECONDS": 5,
    "WEBHOOK_CONNECT_TIMEOUT_SECONDS": 1,
    "WEBHOOK_READ_TIMEOUT_SECONDS": 2,
}
COOLDOWN = WEBHOOK_SETTINGS["WEBHOOK_BREAKER_COOLDOWN_SECONDS"]


# --- the receiver -------------------------------------------------------------------------------------------


class Receiver:
    """An HTTP server recording every request; what it answers is set per path (`answer`)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.answers: dict[str, dict] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": body, "at": time.monotonic()}
                    )
                    answer = dict(receiver.answers.get(self.path, {}))
                time.sleep(answer.get("delay", 0))
                if answer.get("trickle"):
                    # One byte at a time: never slower than the read timeout, never finished.
                    with contextlib.suppress(OSError):  # the client hangs up
                        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 100:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(0.2)
                    return
                self.send_response(answer.get("status", 200))
                for name, value in answer.get("headers", {}).items():
                    self.send_header(name, value)
                payload = answer.get("body", b"ok")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, **answer) -> None:
        with self.lock:
            self.answers[path] = answer

    def requests_to(self, path: str) -> list[dict]:
        with self.lock:
            return [request for request in self.requests if request["path"] == path]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def webhook_settings(settings):
    for name, value in WEBHOOK_SETTINGS.items():
        setattr(settings, name, value)


@pytest.fixture
def child_process_overrides():
    return {name: str(value).lower() for name, value in WEBHOOK_SETTINGS.items()}


def wait_until(condition, what: str, worker=None, timeout: float = DEADLINE_SECONDS):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"{what} did not happen within {timeout}s" + (f"; worker log:\n{worker.log()}" if worker else ""))


def register(client, headers, url: str) -> dict:
    response = client.post(WEBHOOKS, {"url": url}, content_type="application/json", headers=headers)
    assert response.status_code == 201, response.content
    return response.json()


def publish(client, headers, title: str, status: str = "published") -> int:
    response = client.post(
        "/api/v1/posts/",
        {"title": title, "body": f"{title}, the body", "status": status},
        content_type="application/json",
        headers=headers,
    )
    assert response.status_code == 201, response.content
    return response.json()["id"]


def verify(request: dict, secret: str, tolerance: int = 300) -> dict:
    """What the README tells a receiver to do, step by step; returns the event."""
    timestamp = request["headers"]["X-Webhook-Timestamp"]
    assert abs(time.time() - int(timestamp)) <= tolerance
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + request["body"], hashlib.sha256).hexdigest()
    scheme, _, presented = request["headers"]["X-Webhook-Signature"].partition("=")
    assert scheme == "sha256"
    assert hmac.compare_digest(expected, presented)
    event = json.loads(request["body"])
    assert request["headers"]["X-Webhook-Id"] == event["id"]
    return event


def delivery_of(endpoint_id: int) -> WebhookDelivery | None:
    return WebhookDelivery.objects.filter(endpoint_id=endpoint_id).order_by("-id").first()


# --- end to end, with a real worker ------------------------------------------------------------------------


def test_publishing_delivers_a_signed_event_to_every_endpoint(
    client, make_user, bearer, receiver, celery_worker_process, make_post
):
    alice, bob = make_user(), make_user()
    alice_hook = register(client, bearer(alice), receiver.url("/alice"))
    # Bob hears of Alice's posts too: every published post is public, whoever wrote it.
    bob_hook = register(client, bearer(bob), receiver.url("/bob"))
    client.patch(
        f"{WEBHOOKS}/{bob_hook['id']}", {"is_active": False}, content_type="application/json", headers=bearer(bob)
    )

    draft_id = publish(client, bearer(alice), "Draft", status="draft")
    post_id = publish(client, bearer(alice), "Hello")
    request = wait_until(lambda: receiver.requests_to("/alice"), "a delivery", celery_worker_process)[0]

    event = verify(request, alice_hook["secret"])
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["X-Webhook-Event"] == "post.published"
    assert event["type"] == "post.published"
    assert event["id"].startswith("evt_")
    assert datetime.fromisoformat(event["created_at"]).tzinfo is not None and event["created_at"].endswith("Z")
    post = event["data"]["post"]
    assert post == {
        "id": post_id,
        "title": "Hello",
        "body": "Hello, the body",
        "status": "published",
        "author": {"id": alice.pk, "username": alice.username},
        "created_at": post["created_at"],
        "updated_at": post["updated_at"],
    }
    # A signature made with another secret, or over other bytes, does not verify.
    with pytest.raises(AssertionError):
        verify(request, bob_hook["secret"])
    with pytest.raises(AssertionError):
        verify({**request, "body": request["body"].replace(b"Hello", b"Hullo")}, alice_hook["secret"])

    # Its owner sees the record.
    deliveries = wait_until(
        lambda: [
            item
            for item in client.get(f"{WEBHOOKS}/{alice_hook['id']}/deliveries", headers=bearer(alice)).json()["items"]
            if item["status"] == "succeeded"
        ],
        "the delivery record",
    )
    assert deliveries[0]["event_id"] == event["id"]
    assert (deliveries[0]["attempts"], deliveries[0]["last_response_status"]) == (1, 200)
    assert deliveries[0]["delivered_at"] is not None

    # A draft published later (PATCH) and posts published from the admin are events too; the inactive endpoint
    # and the draft itself got nothing.
    client.patch(
        f"/api/v1/posts/{draft_id}", {"status": "published"}, content_type="application/json", headers=bearer(alice)
    )
    staff = make_user(is_staff=True, is_superuser=True)
    client.force_login(staff)
    by_admin = make_post(alice, title="From the admin", status=PostStatus.DRAFT)
    client.post(reverse("admin:posts_post_changelist"), {"action": "publish", "_selected_action": [by_admin.pk]})
    wait_until(lambda: len(receiver.requests_to("/alice")) == 3, "three deliveries", celery_worker_process)
    titles = sorted(json.loads(r["body"])["data"]["post"]["title"] for r in receiver.requests_to("/alice"))
    assert titles == ["Draft", "From the admin", "Hello"]
    assert receiver.requests_to("/bob") == []
    assert not WebhookDelivery.objects.filter(endpoint_id=bob_hook["id"]).exists()


@pytest.fixture
def other_receiver():
    server = Receiver()
    yield server
    server.stop()


def test_a_failing_receiver_is_retried_then_cut_off_until_a_trial_succeeds(
    client, make_user, bearer, receiver, other_receiver, celery_worker_process
):
    headers = bearer(make_user())
    receiver.answer("/down", status=500, body=b"database on fire")
    hook = register(client, headers, receiver.url("/down"))
    # Another port is another host to the breaker.
    healthy = register(client, headers, other_receiver.url("/healthy"))

    publish(client, headers, "First")
    first = wait_until(
        lambda: (d := delivery_of(hook["id"])) and d.status == "failed" and d, "giving up", celery_worker_process
    )
    tries = receiver.requests_to("/down")
    assert (first.attempts, len(tries)) == (3, 3)
    assert first.last_response_status == 500
    assert first.last_error.startswith("Gave up after 3 attempts; last: HTTP 500: database on fire")
    # The same event each time (receivers deduplicate on X-Webhook-Id), re-signed with a fresh timestamp.
    assert len({r["headers"]["X-Webhook-Id"] for r in tries}) == 1
    for request in tries:
        verify(request, hook["secret"])
    # Backoff: a second or so (half of it jittered) between tries.
    gaps = [later["at"] - earlier["at"] for earlier, later in zip(tries, tries[1:], strict=False)]
    assert all(gap >= 0.5 for gap in gaps), gaps
    opened_at = tries[-1]["at"]
    assert get_breaker().state(f"127.0.0.1:{receiver.port}") == "open"

    # While it is open, a new event is not sent to that host: deferred, no attempt counted.
    receiver.answer("/down", status=204)
    publish(client, headers, "Second")
    deferred = wait_until(
        lambda: (d := delivery_of(hook["id"])) and d.pk != first.pk and "circuit breaker open" in d.last_error and d,
        "a deferral",
        celery_worker_process,
    )
    assert (deferred.status, deferred.attempts) == ("pending", 0)
    assert len(receiver.requests_to("/down")) == 3
    # Other hosts are not held back.
    wait_until(
        lambda: WebhookDelivery.objects.filter(endpoint_id=healthy["id"], status="succeeded").count() == 2,
        "the other host's deliveries",
        celery_worker_process,
    )
    assert len(other_receiver.requests_to("/healthy")) == 2

    # After the cool-down a trial goes through; it succeeds, so the breaker closes.
    wait_until(
        lambda: WebhookDelivery.objects.get(pk=deferred.pk).status == "succeeded", "the trial", celery_worker_process
    )
    trial = receiver.requests_to("/down")[3]
    assert trial["at"] - opened_at >= COOLDOWN - 0.5
    assert json.loads(trial["body"])["data"]["post"]["title"] == "Second"
    assert WebhookDelivery.objects.get(pk=deferred.pk).attempts == 1
    assert get_breaker().state(f"127.0.0.1:{receiver.port}") == "closed"


def test_a_redelivered_task_sends_nothing_twice(client, make_user, bearer, receiver, celery_worker_process):
    headers = bearer(make_user())
    hook = register(client, headers, receiver.url("/once"))
    post_id = publish(client, headers, "Once")
    wait_until(
        lambda: (d := delivery_of(hook["id"])) and d.status == "succeeded", "the delivery", celery_worker_process
    )
    delivery = delivery_of(hook["id"])

    # The broker hands both tasks out again (acks_late after a lost worker, or a duplicate message).
    dispatch_webhook_event.delay(delivery.event_id, delivery.event, post_id, delivery.payload["created_at"])
    deliver_webhook.delay(delivery.pk)
    deliver_webhook.delay(delivery.pk)
    # The worker takes tasks in order: once a later event is through, the copies have been handled.
    publish(client, headers, "Later")
    wait_until(lambda: len(receiver.requests_to("/once")) == 2, "the later delivery", celery_worker_process)
    time.sleep(0.5)

    events = [json.loads(r["body"])["data"]["post"]["title"] for r in receiver.requests_to("/once")]
    assert events == ["Once", "Later"]
    assert WebhookDelivery.objects.filter(endpoint_id=hook["id"]).count() == 2
    assert WebhookDelivery.objects.get(pk=delivery.pk).attempts == 1


# --- one attempt, in this process ---------------------------------------------------------------------------


@pytest.fixture
def endpoint(make_user, receiver):
    def make(path: str = "/hook", **fields) -> WebhookEndpoint:
        return WebhookEndpoint.objects.create(
            owner=make_user(),
            url=receiver.url(path),
            events=["post.published"],
            secret=new_secret(),
            **fields,
        )

    return make


@pytest.fixture
def event(make_post):
    """Makes a post.published event's deliveries (what the dispatch task does); returns their ids."""

    def make(post=None) -> list[int]:
        post = post or make_post()
        return event_dispatch(
            event_id=f"evt_{uuid.uuid4().hex}",
            event="post.published",
            post_id=post.pk,
            occurred_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        )

    return make


def attempt(delivery_id: int) -> tuple[float | None, WebhookDelivery]:
    look_again_in = delivery_attempt(delivery_id=delivery_id)
    return look_again_in, WebhookDelivery.objects.get(pk=delivery_id)


def test_a_2xx_succeeds_once(endpoint, event, receiver):
    hook = endpoint()
    [delivery_id] = event()
    look_again_in, delivery = attempt(delivery_id)
    assert look_again_in is None
    assert (delivery.status, delivery.attempts, delivery.last_response_status) == ("succeeded", 1, 200)
    verify(receiver.requests_to("/hook")[0], hook.secret)
    # Done is done: another attempt sends nothing.
    assert attempt(delivery_id)[0] is None
    assert len(receiver.requests_to("/hook")) == 1


def test_an_event_goes_to_active_subscribed_endpoints_only_and_once(endpoint, event, make_post):
    subscribed, inactive = endpoint("/a"), endpoint("/b", is_active=False)
    post = make_post()
    first = event(post)
    assert [WebhookDelivery.objects.get(pk=pk).endpoint_id for pk in first] == [subscribed.pk]
    # The same event id again (a redelivered dispatch): no second row.
    again = event_dispatch(**{**_event_args(first[0]), "post_id": post.pk})
    assert again == first
    assert WebhookDelivery.objects.count() == 1
    assert not WebhookDelivery.objects.filter(endpoint=inactive).exists()


def test_a_dispatch_is_enqueued_only_while_some_endpoint_is_active(client, make_user, bearer, endpoint, broker_tasks):
    headers = bearer(make_user())

    def publish() -> None:
        body = {"title": "Out", "status": "published"}
        assert client.post("/api/v1/posts/", body, content_type="application/json", headers=headers).status_code == 201

    inactive = endpoint(is_active=False)
    publish()
    assert broker_tasks() == []
    inactive.is_active = True
    inactive.save(update_fields=["is_active"])
    publish()
    assert [name for name, _ in broker_tasks()] == ["posts.tasks.dispatch_webhook_event"]


def _event_args(delivery_id: int) -> dict:
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    return {"event_id": delivery.event_id, "event": delivery.event, "occurred_at": delivery.payload["created_at"]}


def test_a_post_no_longer_published_sends_nothing(endpoint, event, make_post):
    endpoint()
    assert event(make_post(status=PostStatus.DRAFT)) == []
    post = make_post()
    Post.objects.filter(pk=post.pk).delete()
    assert event(post) == []
    assert not WebhookDelivery.objects.exists()


@pytest.mark.parametrize("status", [400, 401, 404, 410, 422])
def test_a_4xx_fails_at_once(endpoint, event, receiver, status):
    endpoint()
    receiver.answer("/hook", status=status, body=b"no such hook")
    [delivery_id] = event()
    look_again_in, delivery = attempt(delivery_id)
    assert look_again_in is None
    assert (delivery.status, delivery.attempts, delivery.last_response_status) == ("failed", 1, status)
    assert delivery.last_error == f"HTTP {status}: no such hook"


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
def test_408_429_and_5xx_are_retried_with_backoff(endpoint, event, receiver, status):
    endpoint()
    receiver.answer("/hook", status=status)
    [delivery_id] = event()
    look_again_in, delivery = attempt(delivery_id)
    assert 0.5 <= look_again_in <= 1
    assert (delivery.status, delivery.attempts, delivery.last_response_status) == ("pending", 1, status)
    assert delivery.locked_until is None
    # Not due yet: a copy of the task arriving early sends nothing.
    assert attempt(delivery_id)[0] is None
    assert len(receiver.requests_to("/hook")) == 1


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap(settings):
    settings.WEBHOOK_RETRY_BASE_SECONDS = 10
    settings.WEBHOOK_RETRY_MAX_SECONDS = 300
    for attempts, (low, high) in {1: (5, 10), 2: (10, 20), 3: (20, 40), 6: (150, 300), 20: (150, 300)}.items():
        delays = [retry_delay(attempts) for _ in range(50)]
        assert all(low <= delay <= high for delay in delays), (attempts, delays)
        assert len(set(delays)) > 1
    # A receiver's Retry-After is honoured, up to the cap.
    assert retry_delay(1, retry_after=120) == 120
    assert retry_delay(1, retry_after=10_000) == 300


def test_retry_after_is_honoured(endpoint, event, receiver, settings):
    settings.WEBHOOK_RETRY_MAX_SECONDS = 600
    endpoint()
    receiver.answer("/hook", status=429, headers={"Retry-After": "120"})
    [delivery_id] = event()
    look_again_in, delivery = attempt(delivery_id)
    assert look_again_in == 120
    assert 115 <= (delivery.next_attempt_at - delivery.created_at).total_seconds() <= 125


def test_network_errors_are_retried_and_the_last_attempt_gives_up(endpoint, event, receiver):
    hook = endpoint()
    receiver.stop()  # connection refused from now on
    [delivery_id] = event()
    for number in (1, 2, 3):
        WebhookDelivery.objects.filter(pk=delivery_id).update(next_attempt_at=datetime.now(UTC))
        look_again_in, delivery = attempt(delivery_id)
        assert delivery.attempts == number
        assert "ConnectionRefusedError" in delivery.last_error
    assert look_again_in is None
    assert delivery.status == "failed"
    assert delivery.last_error.startswith("Gave up after 3 attempts")
    assert hook.pk == delivery.endpoint_id


def test_a_slow_receiver_is_cut_off(endpoint, event, receiver):
    endpoint("/slow")
    endpoint("/trickle")
    receiver.answer("/slow", delay=3)
    receiver.answer("/trickle", trickle=True)
    started = time.monotonic()
    for delivery_id in event():
        look_again_in, delivery = attempt(delivery_id)
        assert look_again_in is not None
        assert delivery.status == "pending"
        assert "TimeoutError" in delivery.last_error or "timed out" in delivery.last_error
    # Each is cut off after connect + read timeouts (1 + 2 s), the trickling one too.
    assert time.monotonic() - started < 8


def test_a_redirect_is_not_followed(endpoint, event, receiver):
    endpoint()
    receiver.answer("/hook", status=302, headers={"Location": receiver.url("/elsewhere")})
    [delivery_id] = event()
    look_again_in, delivery = attempt(delivery_id)
    assert look_again_in is None
    assert (delivery.status, delivery.last_response_status) == ("failed", 302)
    assert "redirects are not followed" in delivery.last_error
    assert receiver.requests_to("/elsewhere") == []


def test_the_address_is_checked_again_when_sending(endpoint, event, receiver, settings):
    """A host that resolved to a public address at registration may point elsewhere by the time of sending (DNS
    rebinding): the check is made again, and a refused address gets no request."""
    endpoint()
    [delivery_id] = event()
    settings.WEBHOOK_ALLOW_LOOPBACK = False
    look_again_in, delivery = attempt(delivery_id)
    assert look_again_in is None
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    assert "loopback" in delivery.last_error
    assert receiver.requests_to("/hook") == []


def test_a_deactivated_endpoint_gets_nothing_more(endpoint, event, receiver):
    hook = endpoint()
    [delivery_id] = event()
    WebhookEndpoint.objects.filter(pk=hook.pk).update(is_active=False)
    look_again_in, delivery = attempt(delivery_id)
    assert (look_again_in, delivery.status, delivery.attempts) == (None, "failed", 0)
    assert receiver.requests_to("/hook") == []


def test_concurrent_copies_of_one_task_send_once(endpoint, event, receiver):
    endpoint()
    receiver.answer("/hook", delay=0.5)
    [delivery_id] = event()

    def attempt_in_a_thread(_):
        try:
            return delivery_attempt(delivery_id=delivery_id)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(attempt_in_a_thread, range(4)))
    assert len(receiver.requests_to("/hook")) == 1
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    assert (delivery.status, delivery.attempts) == ("succeeded", 1)
    # The copies that found it being sent come back after the lease, and then find it done.
    assert outcomes.count(None) == 1
    assert all(outcome > 0 for outcome in outcomes if outcome is not None)
    assert attempt(delivery_id)[0] is None


def test_a_delivery_kept_waiting_by_the_breaker_too_long_is_given_up(endpoint, event, receiver, settings):
    endpoint()
    [delivery_id] = event()
    breaker = get_breaker()
    for _ in range(3):
        breaker.failure(f"127.0.0.1:{receiver.port}")
    look_again_in, delivery = attempt(delivery_id)
    assert COOLDOWN - 1 <= look_again_in <= COOLDOWN + 1
    assert (delivery.status, delivery.attempts) == ("pending", 0)
    WebhookDelivery.objects.filter(pk=delivery_id).update(
        next_attempt_at=datetime.now(UTC), created_at=datetime(2020, 1, 1, tzinfo=UTC)
    )
    look_again_in, delivery = attempt(delivery_id)
    assert (look_again_in, delivery.status) == (None, "failed")
    assert delivery.last_error.startswith("Gave up")
    assert receiver.requests_to("/hook") == []


# --- the circuit breaker ------------------------------------------------------------------------------------


@pytest.fixture(params=["redis", "memory"])
def breaker(request):
    """Both backends must behave the same: the embedded default runs on process memory."""
    return get_breaker() if request.param == "redis" else Breaker(MemoryKeyValue(), "test-breaker")


def test_the_breaker_opens_after_consecutive_failures_and_half_opens_for_one_trial(breaker):
    host, now = f"host-{uuid.uuid4().hex}:443", 1_000_000.0
    assert breaker.acquire(host, now).allowed
    assert [breaker.failure(host, now) for _ in range(3)] == [False, False, True]
    assert breaker.state(host) == "open"

    denied = breaker.acquire(host, now + 1)
    assert (denied.allowed, denied.retry_at) == (False, now + COOLDOWN)
    # Cooled down: exactly one caller gets the trial, the others wait for its outcome.
    trial = breaker.acquire(host, now + COOLDOWN)
    assert (trial.allowed, trial.trial) == (True, True)
    assert not breaker.acquire(host, now + COOLDOWN + 0.1).allowed
    # The trial fails: open for another cool-down.
    assert breaker.failure(host, now + COOLDOWN + 1)
    assert not breaker.acquire(host, now + 2 * COOLDOWN).allowed
    assert breaker.acquire(host, now + 2 * COOLDOWN + 1).trial
    breaker.success(host)
    assert breaker.state(host) == "closed"
    assert breaker.acquire(host, now + 2 * COOLDOWN + 1).allowed
    # Closed again, the count starts afresh; a success in between resets it.
    breaker.failure(host, now + 10)
    breaker.failure(host, now + 10)
    breaker.success(host)
    assert not breaker.failure(host, now + 10)
    assert breaker.state(host) == "closed"


def test_a_trial_whose_worker_vanished_is_handed_to_the_next_caller(breaker):
    host, now = f"host-{uuid.uuid4().hex}:443", 1_000_000.0
    for _ in range(3):
        breaker.failure(host, now)
    assert breaker.acquire(host, now + COOLDOWN).trial
    lease = WEBHOOK_SETTINGS["WEBHOOK_CONNECT_TIMEOUT_SECONDS"] + WEBHOOK_SETTINGS["WEBHOOK_READ_TIMEOUT_SECONDS"] + 5
    assert not breaker.acquire(host, now + COOLDOWN + lease - 1).allowed
    assert breaker.acquire(host, now + COOLDOWN + lease).trial
    # A trial taken but never made (its URL was refused) is released at once.
    breaker.release(host)
    assert breaker.acquire(host, now + COOLDOWN + lease).trial


def test_concurrent_callers_agree_on_one_trial(breaker):
    host, now = f"host-{uuid.uuid4().hex}:443", 1_000_000.0
    for _ in range(3):
        breaker.failure(host, now)
    with ThreadPoolExecutor(max_workers=8) as pool:
        decisions = list(pool.map(lambda _: breaker.acquire(host, now + COOLDOWN), range(40)))
    assert sum(decision.allowed for decision in decisions) == 1


# --- operators ----------------------------------------------------------------------------------------------


def test_the_admin_retries_failed_deliveries(client, make_user, endpoint, event):
    endpoint()
    [failed, succeeded] = [*event(), *event()]
    WebhookDelivery.objects.filter(pk=failed).update(status="failed", attempts=3, last_error="Gave up")
    WebhookDelivery.objects.filter(pk=succeeded).update(status="succeeded", attempts=1)
    client.force_login(make_user(is_staff=True, is_superuser=True))
    changelist = reverse("admin:webhooks_webhookdelivery_changelist")

    listed = client.get(changelist, {"status__exact": "failed"}).content.decode()
    failed_event, succeeded_event = (WebhookDelivery.objects.get(pk=pk).event_id for pk in (failed, succeeded))
    assert failed_event in listed and succeeded_event not in listed
    response = client.post(changelist, {"action": "retry", "_selected_action": [failed, succeeded]}, follow=True)
    assert "Sent 1 failed delivery(ies) back to the queue." in response.content.decode()
    retried = WebhookDelivery.objects.get(pk=failed)
    assert (retried.status, retried.attempts) == ("pending", 0)
    assert WebhookDelivery.objects.get(pk=succeeded).status == "succeeded"
    # The endpoint's page never shows the secret.
    endpoint_page = client.get(reverse("admin:webhooks_webhookendpoint_change", args=[retried.endpoint_id]))
    assert retried.endpoint.secret not in endpoint_page.content.decode()


def test_the_sweep_requeues_deliveries_whose_message_was_lost(endpoint, event):
    endpoint()
    [stalled, _fresh] = [*event(), *event()]
    WebhookDelivery.objects.filter(pk=stalled).update(next_attempt_at=datetime(2020, 1, 1, tzinfo=UTC))
    assert webhook_deliveries_requeue_stalled() == 1


def test_the_breaker_fails_open_when_redis_does_not_answer(caplog):
    """Deliveries go out unguarded rather than not at all; nothing is counted, and the log says why."""
    unreachable = Breaker(RedisKeyValue("redis://127.0.0.1:1/0", timeout=0.5), "test-breaker")
    host = f"host-{uuid.uuid4().hex}:443"
    decision = unreachable.acquire(host)
    assert (decision.allowed, decision.trial) == (True, False)
    assert unreachable.failure(host) is False
    unreachable.success(host)
    unreachable.release(host)
    assert unreachable.state(host) == "closed"
    assert "webhook circuit breaker unavailable" in caplog.text
