"""Webhooks: endpoints users register, and the signed deliveries of events to them (README, Webhooks).

- Every active endpoint subscribed to `post.published` hears of every post published on the service (public
  information), whoever wrote it. A publication commits, then one Celery task makes a delivery row per endpoint
  (unique per endpoint and event id, so a redelivered task makes none twice) and one task per delivery sends it.
- A delivery is a POST of the event's JSON signed with the endpoint's secret (HMAC-SHA256 over
  "{timestamp}.{body}"), retried with exponential backoff and jitter on network errors, 408, 429 and 5xx, up to
  WEBHOOK_MAX_ATTEMPTS requests. Other answers end it: 2xx succeeded, anything else failed. Redirects are not
  followed.
- Each receiving host (name and port) has a circuit breaker (Redis, atomic Lua; in-process without Redis): it opens
  after WEBHOOK_BREAKER_THRESHOLD failures in a row; while open, deliveries to the host are deferred until the
  cool-down ends, without a request and without counting an attempt; then one trial request goes through, and its
  outcome closes the breaker or opens it for another cool-down.
- SSRF: a URL must be http(s) and every address its host resolves to must be public. Checked when the endpoint is
  registered or changed, and again right before each request, which then connects to the address just checked
  (a DNS answer that changed in between cannot redirect it to an internal one).
"""

import contextlib
import hashlib
import hmac
import http.client
import ipaddress
import logging
import random
import secrets
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import orjson
import redis
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import User
from core.errors import Conflict, InvalidInput, NotFound
from core.renderers import iso_utc
from posts.models import (
    MAX_WEBHOOK_ERROR_LENGTH,
    Post,
    PostStatus,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
    WebhookEvent,
)
from posts.selectors import webhook_endpoint_snapshot

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Webhook-Signature"
TIMESTAMP_HEADER = "X-Webhook-Timestamp"
ID_HEADER = "X-Webhook-Id"
EVENT_HEADER = "X-Webhook-Event"
USER_AGENT = "backend-webhooks/1.0"
SECRET_PREFIX = "whsec_"

# What is read of a failed answer, to show its owner why; the rest is never read.
_ERROR_SNIPPET_BYTES = 300
# Addresses tried per request when a host has several.
_MAX_ADDRESSES_TRIED = 3
# A pending delivery whose retry is this late had its message lost; the periodic sweep sends it again.
_STALLED_AFTER = timedelta(minutes=5)
_SWEEP_BATCH = 1000
_DISPATCH_CHUNK = 500


def _now() -> float:
    return time.time()


def _truncated(message: str) -> str:
    return message if len(message) <= MAX_WEBHOOK_ERROR_LENGTH else message[: MAX_WEBHOOK_ERROR_LENGTH - 1] + "…"


# --- signing ---------------------------------------------------------------------------------------------


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=<hex>`: HMAC-SHA256, keyed with the secret's UTF-8 bytes, of `{timestamp}.{body}`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


# --- SSRF guard ------------------------------------------------------------------------------------------

_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, ...
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "169.254.170.2",  # AWS ECS task credentials
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UrlNotAllowed(Exception):
    """The URL may not be a webhook's target; the message says why, for its owner."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str

    @property
    def breaker_key(self) -> str:
        return f"{self.host}:{self.port}"


def target_of(url: str) -> Target:
    """The parts of a URL the schema already validated (posts/schemas.py)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise UrlNotAllowed("Only http and https URLs with a host can receive webhooks.")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise UrlNotAllowed("The URL's port is invalid.") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(scheme=scheme, host=parts.hostname, port=port, path=path)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), which is where a packet would really go."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(address: str) -> str | None:
    """Why a webhook may not be sent to this IP address, or None when it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    candidates = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and (embedded := _embedded_ipv4(ip)) is not None:
        candidates = [embedded] if ip.ipv4_mapped is not None else [ip, embedded]
    for candidate in candidates:
        if candidate in _METADATA_ADDRESSES:
            return "a cloud metadata address"
        if candidate.is_loopback:
            if settings.WEBHOOK_ALLOW_LOOPBACK:
                continue
            return "a loopback address"
        for label, flag in (
            ("an unspecified address", candidate.is_unspecified),
            ("a link-local address", candidate.is_link_local),
            ("a multicast address", candidate.is_multicast),
            ("a private address", candidate.is_private),
            ("a reserved address", candidate.is_reserved),
            ("a non-public address", not candidate.is_global),
        ):
            if flag:
                return label
    return None


def resolve_public(target: Target) -> list[str]:
    """The host's addresses, all of them allowed. Raises UrlNotAllowed, or OSError when resolving fails."""
    infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    for address in addresses:
        refusal = address_refusal(address)
        if refusal is not None:
            # Every address must pass: a client connecting to any of them must not reach an internal service.
            raise UrlNotAllowed(f"The URL's host resolves to {refusal}; webhooks are only sent to public addresses.")
    if not addresses:
        raise OSError("no address")
    return addresses


def url_check(url: str) -> None:
    """A URL being registered: refused as the validation error of `url` (422) when it may not receive webhooks."""
    try:
        resolve_public(target_of(url))
    except UrlNotAllowed as exc:
        raise InvalidInput(loc=["body", "url"], msg=str(exc), type="url_not_allowed") from None
    except (OSError, UnicodeError, ValueError):
        raise InvalidInput(
            loc=["body", "url"], msg="The URL's host could not be resolved.", type="url_unresolvable"
        ) from None


# --- endpoints -------------------------------------------------------------------------------------------


def _is_duplicate_url(exc: IntegrityError) -> bool:
    return "webhooks_owner_url_unique" in str(exc)


_DUPLICATE_URL = "You already have a webhook for this URL."


def webhook_endpoint_create(*, owner: User, url: str, events: list[str]) -> dict:
    """The new endpoint, with its secret: the only time the secret is shown."""
    url_check(url)  # DNS, before any transaction is open
    try:
        with transaction.atomic():
            # The owner's row lock serialises their concurrent creations, so the cap holds.
            User.objects.select_for_update().filter(pk=owner.pk).first()
            if WebhookEndpoint.objects.filter(owner=owner).count() >= settings.WEBHOOK_MAX_ENDPOINTS_PER_USER:
                cap = settings.WEBHOOK_MAX_ENDPOINTS_PER_USER
                raise Conflict(
                    f"You have {cap} webhooks, the most allowed; delete one first.", code="webhook_limit_reached"
                )
            endpoint = WebhookEndpoint.objects.create(owner=owner, url=url, events=events, secret=new_secret())
    except IntegrityError as exc:
        if _is_duplicate_url(exc):
            raise Conflict(_DUPLICATE_URL, code="webhook_exists") from None
        raise
    return {**webhook_endpoint_snapshot(endpoint), "secret": endpoint.secret}


def webhook_endpoint_update(
    *,
    owner: User,
    endpoint_id: int,
    url: str | None = None,
    events: list[str] | None = None,
    is_active: bool | None = None,
) -> dict:
    """None leaves a field as it is (the API refuses an explicit null)."""
    endpoint = WebhookEndpoint.objects.filter(pk=endpoint_id, owner=owner).first()
    if endpoint is None:
        raise NotFound("No such webhook.")
    if url is not None and url != endpoint.url:
        url_check(url)
    requested = {"url": url, "events": events, "is_active": is_active}
    changed = {name: value for name, value in requested.items() if value is not None}
    try:
        with transaction.atomic():
            updated = WebhookEndpoint.objects.filter(pk=endpoint_id, owner=owner).update(
                **changed, updated_at=timezone.now()
            )
    except IntegrityError as exc:
        if _is_duplicate_url(exc):
            raise Conflict(_DUPLICATE_URL, code="webhook_exists") from None
        raise
    if not updated:
        raise NotFound("No such webhook.")
    return webhook_endpoint_snapshot(WebhookEndpoint.objects.get(pk=endpoint_id))


def webhook_endpoint_delete(*, owner: User, endpoint_id: int) -> None:
    """Its deliveries go with it; their queued tasks then find nothing to do."""
    deleted, _ = WebhookEndpoint.objects.filter(pk=endpoint_id, owner=owner).delete()
    if not deleted:
        raise NotFound("No such webhook.")


# --- events ----------------------------------------------------------------------------------------------


def posts_published(post_ids: list[int]) -> None:
    """A transaction that published these posts has committed (a `transaction.on_commit` callback): one dispatch
    task per post. Never raises: the posts are published whatever happens to their webhooks."""
    from posts.tasks import dispatch_webhook_event

    # With no active endpoint the task would find nobody to deliver to: one small query here instead of a task
    # published per post (a broker round trip, a worker's time). Checked after the commit, so an endpoint that
    # exists by the time the post is published is seen.
    if not WebhookEndpoint.objects.filter(is_active=True).exists():
        return
    occurred_at = iso_utc(timezone.now())
    for post_id in post_ids:
        try:
            dispatch_webhook_event.delay(
                f"evt_{uuid.uuid4().hex}", WebhookEvent.POST_PUBLISHED.value, post_id, occurred_at
            )
        except Exception:
            logger.exception("post.published webhooks of post %s could not be enqueued", post_id)


def _post_data(post: Post) -> dict:
    """The post as the API's PostOut shows it."""
    return {
        "id": post.pk,
        "title": post.title,
        "body": post.body,
        "status": str(post.status),
        "author": {"id": post.author_id, "username": post.author.username},
        "created_at": iso_utc(post.created_at),
        "updated_at": iso_utc(post.updated_at),
    }


def event_dispatch(*, event_id: str, event: str, post_id: int, occurred_at: str) -> list[int]:
    """Makes the event's delivery for every active endpoint subscribed to it; returns the ids of those not yet
    attempted. Run again with the same event id (a redelivered task), it makes no new row."""
    post = Post.objects.select_related("author").filter(pk=post_id).first()
    if post is None or post.status != PostStatus.PUBLISHED:
        # Deleted or unpublished before the event went out: what it would carry is no longer public.
        logger.info("%s %s for post %s not sent: the post is no longer published", event, event_id, post_id)
        return []
    payload = {"id": event_id, "type": event, "created_at": occurred_at, "data": {"post": _post_data(post)}}
    endpoints = WebhookEndpoint.objects.filter(is_active=True).order_by("pk").values_list("pk", "events")
    pending: list[int] = []
    chunk: list[int] = []

    def flush() -> None:
        now = timezone.now()
        WebhookDelivery.objects.bulk_create(
            [
                WebhookDelivery(
                    endpoint_id=endpoint_id,
                    event=event,
                    event_id=event_id,
                    payload=payload,
                    created_at=now,
                    next_attempt_at=now,
                )
                for endpoint_id in chunk
            ],
            ignore_conflicts=True,
        )
        pending.extend(
            WebhookDelivery.objects.filter(
                endpoint_id__in=chunk, event_id=event_id, status=WebhookDeliveryStatus.PENDING, attempts=0
            ).values_list("pk", flat=True)
        )
        chunk.clear()

    for endpoint_id, events in endpoints.iterator(chunk_size=_DISPATCH_CHUNK):
        if event in events:
            chunk.append(endpoint_id)
            if len(chunk) >= _DISPATCH_CHUNK:
                flush()
    if chunk:
        flush()
    return pending


def delivery_schedule(*, delivery_id: int, countdown: float = 0) -> None:
    """Queue an attempt. The embedded default (eager Celery) makes one attempt per delivery, at once, and
    schedules no retries: without a worker they would run at once, inside the request that published."""
    from posts.tasks import deliver_webhook

    if settings.CELERY_TASK_ALWAYS_EAGER and countdown > 0:
        return
    deliver_webhook.apply_async((delivery_id,), countdown=max(0.0, countdown))


# --- circuit breaker -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BreakerDecision:
    allowed: bool
    # This request is the half-open breaker's one trial.
    trial: bool = False
    # When to come back when not allowed (epoch seconds).
    retry_at: float = 0.0


# Fields of the per-host hash: state (closed | open | half_open), failures (in a row), until (epoch seconds: the end
# of the cool-down when open, of the trial's lease when half-open). No hash: closed, no failures.
_ACQUIRE = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'closed' then return {1, 0, '0'} end
local now = tonumber(ARGV[1])
local until_ = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
if now < until_ then return {0, 0, tostring(until_)} end
redis.call('HSET', KEYS[1], 'state', 'half_open', 'until', tostring(now + tonumber(ARGV[2])))
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {1, 1, '0'}
"""
_FAILURE = """
local state = redis.call('HGET', KEYS[1], 'state')
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local opened = 0
if state == 'half_open' or (state ~= 'open' and failures >= tonumber(ARGV[2])) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'until', tostring(tonumber(ARGV[1]) + tonumber(ARGV[3])))
  opened = 1
elseif not state then
  redis.call('HSET', KEYS[1], 'state', 'closed')
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return opened
"""
# A trial that was taken but never made (its URL was refused): the next caller may make it at once.
_RELEASE = """
if redis.call('HGET', KEYS[1], 'state') == 'half_open' then
  redis.call('HSET', KEYS[1], 'state', 'open', 'until', '0')
end
return 0
"""


def _trial_lease_seconds() -> int:
    return settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS + settings.WEBHOOK_READ_TIMEOUT_SECONDS + 5


def _breaker_ttl() -> int:
    # Long enough to outlive a cool-down; a host not heard of for an hour starts afresh.
    return settings.WEBHOOK_BREAKER_COOLDOWN_SECONDS + 3600


class RedisBreaker:
    """Shared by every worker: each transition is one Lua script, so concurrent workers agree on one trial."""

    def __init__(self, url: str, prefix: str) -> None:
        self.prefix = prefix
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.scripts = {
            name: self.client.register_script(source)
            for name, source in (("acquire", _ACQUIRE), ("failure", _FAILURE), ("release", _RELEASE))
        }

    def _key(self, host: str) -> str:
        return f"{self.prefix}:{host}"

    def acquire(self, host: str, now: float | None = None) -> BreakerDecision:
        now = _now() if now is None else now
        allowed, trial, retry_at = self.scripts["acquire"](
            keys=[self._key(host)], args=[repr(now), _trial_lease_seconds(), _breaker_ttl()]
        )
        return BreakerDecision(allowed=bool(allowed), trial=bool(trial), retry_at=float(retry_at))

    def failure(self, host: str, now: float | None = None) -> bool:
        """Counts a failure; True when it opened the breaker."""
        now = _now() if now is None else now
        args = [
            repr(now),
            settings.WEBHOOK_BREAKER_THRESHOLD,
            settings.WEBHOOK_BREAKER_COOLDOWN_SECONDS,
            _breaker_ttl(),
        ]
        return bool(self.scripts["failure"](keys=[self._key(host)], args=args))

    def success(self, host: str) -> None:
        self.client.delete(self._key(host))

    def release(self, host: str) -> None:
        self.scripts["release"](keys=[self._key(host)])

    def state(self, host: str) -> str:
        value = self.client.hget(self._key(host), "state")
        return value.decode() if value else "closed"


class MemoryBreaker:
    """The embedded default's breaker (one process): the same transitions under a lock."""

    def __init__(self) -> None:
        self._hosts: dict[str, dict] = {}
        self._lock = threading.Lock()

    def acquire(self, host: str, now: float | None = None) -> BreakerDecision:
        now = _now() if now is None else now
        with self._lock:
            entry = self._hosts.get(host)
            if entry is None or entry["state"] == "closed":
                return BreakerDecision(allowed=True)
            if now < entry["until"]:
                return BreakerDecision(allowed=False, retry_at=entry["until"])
            entry.update(state="half_open", until=now + _trial_lease_seconds())
            return BreakerDecision(allowed=True, trial=True)

    def failure(self, host: str, now: float | None = None) -> bool:
        now = _now() if now is None else now
        with self._lock:
            entry = self._hosts.setdefault(host, {"state": "closed", "failures": 0, "until": 0.0})
            entry["failures"] += 1
            if entry["state"] == "half_open" or (
                entry["state"] != "open" and entry["failures"] >= settings.WEBHOOK_BREAKER_THRESHOLD
            ):
                entry.update(state="open", until=now + settings.WEBHOOK_BREAKER_COOLDOWN_SECONDS)
                return True
            return False

    def success(self, host: str) -> None:
        with self._lock:
            self._hosts.pop(host, None)

    def release(self, host: str) -> None:
        with self._lock:
            entry = self._hosts.get(host)
            if entry is not None and entry["state"] == "half_open":
                entry.update(state="open", until=0.0)

    def state(self, host: str) -> str:
        with self._lock:
            return self._hosts.get(host, {}).get("state", "closed")


_breakers: dict[str, RedisBreaker | MemoryBreaker] = {}


def get_breaker() -> RedisBreaker | MemoryBreaker:
    url = settings.REDIS_URL
    breaker = _breakers.get(url)
    if breaker is None:
        breaker = RedisBreaker(url, f"{settings.CACHE_KEY_PREFIX}:webhook-breaker") if url else MemoryBreaker()
        _breakers[url] = breaker
    return breaker


class _FailOpen:
    """The breaker protects receivers and our workers; it is not worth losing deliveries over. With Redis
    unreachable every request is allowed and nothing is counted (logged)."""

    def __init__(self, breaker) -> None:
        self.breaker = breaker

    def __getattr__(self, name):
        method = getattr(self.breaker, name)

        def call(*args, **kwargs):
            try:
                return method(*args, **kwargs)
            except (redis.RedisError, OSError) as exc:
                logger.warning("webhook circuit breaker unavailable (%s): failing open", exc)
                return BreakerDecision(allowed=True) if name == "acquire" else None

        return call


# --- sending ---------------------------------------------------------------------------------------------


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP(S) to an address already checked, whatever the host name would resolve to now. The host name is still
    the Host header, the TLS server name and what the certificate is checked against."""

    def __init__(self, target: Target, addresses: list[str]) -> None:
        super().__init__(target.host, target.port, timeout=settings.WEBHOOK_READ_TIMEOUT_SECONDS)
        self.addresses = addresses[:_MAX_ADDRESSES_TRIED]
        self.tls = ssl.create_default_context() if target.scheme == "https" else None

    def connect(self) -> None:
        error: OSError | None = None
        for address in self.addresses:
            try:
                sock = socket.create_connection((address, self.port), timeout=settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS)
                break
            except OSError as exc:
                error = exc
        else:
            raise error or OSError("no address to connect to")
        sock.settimeout(self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.host) if self.tls else sock


@dataclass(frozen=True)
class Answer:
    status: int
    snippet: str
    retry_after: int | None


def _cut(connection: _PinnedConnection, fired: threading.Event) -> None:
    """The whole exchange took too long (a receiver trickling bytes defeats per-read timeouts): wake the blocked
    read by shutting the socket down under it."""
    fired.set()
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _post(target: Target, addresses: list[str], headers: dict[str, str], body: bytes) -> Answer:
    """One request, no redirect followed. Raises OSError or http.client.HTTPException on network failures."""
    connection = _PinnedConnection(target, addresses)
    fired = threading.Event()
    deadline = settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS + settings.WEBHOOK_READ_TIMEOUT_SECONDS
    timer = threading.Timer(deadline, _cut, (connection, fired))
    timer.daemon = True
    timer.start()
    try:
        connection.request("POST", target.path, body=body, headers=headers)
        response = connection.getresponse()
        snippet = b"" if 200 <= response.status < 300 else response.read(_ERROR_SNIPPET_BYTES)
        if fired.is_set():
            # Cut off mid-answer: what was parsed is not an answer (http.client takes the end of input for the end
            # of the headers).
            raise TimeoutError(f"no complete answer within {deadline} s")
        retry_after = response.headers.get("Retry-After", "").strip()
        return Answer(
            status=response.status,
            snippet=snippet.decode("utf-8", "replace").strip(),
            retry_after=int(retry_after) if retry_after.isdigit() else None,
        )
    except (OSError, http.client.HTTPException) as exc:
        if fired.is_set():
            raise TimeoutError(f"no complete answer within {deadline} s") from exc
        raise
    finally:
        timer.cancel()
        connection.close()


# --- delivering ------------------------------------------------------------------------------------------


def _lease_seconds() -> int:
    return settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS + settings.WEBHOOK_READ_TIMEOUT_SECONDS + 30


def retry_delay(attempts: int, retry_after: int | None = None) -> float:
    """Exponential backoff, half of it jittered so that deliveries that failed together do not retry together; a
    receiver's Retry-After is honoured up to the cap."""
    ceiling = min(settings.WEBHOOK_RETRY_MAX_SECONDS, settings.WEBHOOK_RETRY_BASE_SECONDS * 2 ** (attempts - 1))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.WEBHOOK_RETRY_MAX_SECONDS))
    return delay


def _claim(delivery_id: int, now: datetime) -> tuple[datetime | None, float | None]:
    """Takes the delivery for one attempt: (lease end, None), or (None, seconds until another look is due, or
    None when there is nothing to do: done, gone, or not due yet and a message is scheduled for then)."""
    lease_until = now + timedelta(seconds=_lease_seconds())
    claimed = (
        WebhookDelivery.objects.filter(pk=delivery_id, status=WebhookDeliveryStatus.PENDING, next_attempt_at__lte=now)
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lte=now))
        .update(locked_until=lease_until)
    )
    if claimed:
        return lease_until, None
    held = (
        WebhookDelivery.objects.filter(pk=delivery_id, status=WebhookDeliveryStatus.PENDING, locked_until__gt=now)
        .values_list("locked_until", flat=True)
        .first()
    )
    if held is not None:
        # Another copy of this task is sending it, or was when its worker died: look again once that lease ends.
        return None, (held - now).total_seconds() + 1
    return None, None


def _record(delivery_id: int, lease_until: datetime, **fields) -> None:
    """Writes the outcome, as long as the lease is still this attempt's."""
    written = WebhookDelivery.objects.filter(pk=delivery_id, locked_until=lease_until).update(
        locked_until=None, **fields
    )
    if not written:
        logger.warning("webhook delivery %s: lease lost before its outcome was written", delivery_id)


def _failed(delivery_id: int, lease_until: datetime, error: str, **fields) -> None:
    _record(delivery_id, lease_until, status=WebhookDeliveryStatus.FAILED, last_error=_truncated(error), **fields)


def delivery_attempt(*, delivery_id: int) -> float | None:
    """Makes one attempt at a delivery when it is due and no one else is making it. Returns in how many seconds
    the delivery wants another look (a retry, a deferral), or None when there is nothing more to do."""
    now = timezone.now()
    lease_until, look_again_in = _claim(delivery_id, now)
    if lease_until is None:
        return look_again_in
    delivery = WebhookDelivery.objects.select_related("endpoint").get(pk=delivery_id)
    endpoint = delivery.endpoint
    if not endpoint.is_active:
        _failed(delivery_id, lease_until, "Not sent: the endpoint was deactivated.")
        return None
    try:
        target = target_of(endpoint.url)
    except UrlNotAllowed as exc:
        _failed(delivery_id, lease_until, f"Not sent: {exc}")
        return None

    breaker = _FailOpen(get_breaker())
    decision = breaker.acquire(target.breaker_key)
    if not decision.allowed:
        return _defer(delivery, lease_until, target, decision.retry_at, now)

    WebhookDelivery.objects.filter(pk=delivery_id, locked_until=lease_until).update(attempts=F("attempts") + 1)
    attempts = delivery.attempts + 1
    try:
        # Resolved and checked again right before sending, and the request goes to the address checked.
        addresses = resolve_public(target)
        body = orjson.dumps(delivery.payload, option=orjson.OPT_SORT_KEYS)
        timestamp = int(_now())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            ID_HEADER: delivery.event_id,
            EVENT_HEADER: delivery.event,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature(endpoint.secret, timestamp, body),
        }
        answer = _post(target, addresses, headers, body)
    except UrlNotAllowed as exc:
        if decision.trial:
            breaker.release(target.breaker_key)
        _failed(delivery_id, lease_until, f"Not sent: {exc}")
        logger.warning("webhook delivery %s refused at send time: %s", delivery_id, exc)
        return None
    except (OSError, http.client.HTTPException, UnicodeError) as exc:
        breaker.failure(target.breaker_key)
        return _retry_or_fail(delivery_id, lease_until, attempts, f"{type(exc).__name__}: {exc}".rstrip(": "))

    status = answer.status
    detail = f"HTTP {status}" + (f": {answer.snippet}" if answer.snippet else "")
    if 200 <= status < 300:
        breaker.success(target.breaker_key)
        _record(
            delivery_id,
            lease_until,
            status=WebhookDeliveryStatus.SUCCEEDED,
            last_response_status=status,
            last_error="",
            delivered_at=timezone.now(),
        )
        return None
    if status in (408, 429) or status >= 500:
        breaker.failure(target.breaker_key)
        return _retry_or_fail(
            delivery_id, lease_until, attempts, detail, status=status, retry_after=answer.retry_after
        )
    # The host answered, so it is up as far as the breaker is concerned; the answer itself is final.
    breaker.success(target.breaker_key)
    if 300 <= status < 400:
        detail = f"HTTP {status}: redirects are not followed; register the final URL."
    _failed(delivery_id, lease_until, detail, last_response_status=status)
    return None


def _retry_or_fail(
    delivery_id: int,
    lease_until: datetime,
    attempts: int,
    error: str,
    *,
    status: int | None = None,
    retry_after: int | None = None,
) -> float | None:
    if attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
        _failed(
            delivery_id, lease_until, f"Gave up after {attempts} attempts; last: {error}", last_response_status=status
        )
        return None
    delay = retry_delay(attempts, retry_after)
    _record(
        delivery_id,
        lease_until,
        last_response_status=status,
        last_error=_truncated(error),
        next_attempt_at=timezone.now() + timedelta(seconds=delay),
    )
    return delay


def _defer(delivery: WebhookDelivery, lease_until: datetime, target: Target, retry_at: float, now: datetime):
    """The host's breaker is open: no request, no attempt counted; back once the cool-down (or the trial running
    now) is over, spread out a little so that the waiting deliveries do not all come back at once."""
    if (now - delivery.created_at).total_seconds() > settings.WEBHOOK_DELIVERY_MAX_AGE_SECONDS:
        _failed(
            delivery.pk,
            lease_until,
            f"Gave up: {target.breaker_key} kept failing for {settings.WEBHOOK_DELIVERY_MAX_AGE_SECONDS} s.",
        )
        return None
    delay = max(retry_at - _now(), 0.0) + random.uniform(0, 1)
    when = now + timedelta(seconds=delay)
    _record(
        delivery.pk,
        lease_until,
        next_attempt_at=when,
        last_error=(
            f"Not attempted: {target.breaker_key} keeps failing (circuit breaker open); next try {iso_utc(when)}."
        ),
    )
    return delay


# --- operators -------------------------------------------------------------------------------------------


def webhook_deliveries_retry(*, delivery_ids) -> int:
    """Failed deliveries get a fresh round of attempts (the admin's "retry"); returns how many."""
    with transaction.atomic():
        ids = list(
            WebhookDelivery.objects.select_for_update()
            .filter(pk__in=list(delivery_ids), status=WebhookDeliveryStatus.FAILED)
            .values_list("pk", flat=True)
        )
        WebhookDelivery.objects.filter(pk__in=ids).update(
            status=WebhookDeliveryStatus.PENDING, attempts=0, next_attempt_at=timezone.now(), locked_until=None
        )
        transaction.on_commit(lambda: [delivery_schedule(delivery_id=delivery_id) for delivery_id in ids])
    return len(ids)


def webhook_deliveries_requeue_stalled() -> int:
    """Pending deliveries overdue by minutes lost their task message (a broker restart, a crash between writing
    a retry and queueing it): queue them again. A copy of a message that was not lost finds nothing to do."""
    now = timezone.now()
    ids = list(
        WebhookDelivery.objects.filter(status=WebhookDeliveryStatus.PENDING, next_attempt_at__lt=now - _STALLED_AFTER)
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lte=now))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:_SWEEP_BATCH]
    )
    for delivery_id in ids:
        delivery_schedule(delivery_id=delivery_id)
    return len(ids)
