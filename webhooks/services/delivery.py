"""One attempt at a delivery, and what its outcome schedules: success, a retry after a backoff, a deferral while
the host's breaker is open, or the end."""

import http.client
import logging
import random
import time
from datetime import datetime, timedelta

import orjson
from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from core.renderers import iso_utc
from webhooks.models import MAX_WEBHOOK_ERROR_LENGTH, WebhookDelivery, WebhookDeliveryStatus
from webhooks.services import client
from webhooks.services.breaker import get_breaker
from webhooks.services.signing import (
    EVENT_HEADER,
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    USER_AGENT,
    signature,
)
from webhooks.services.targets import Target, UrlNotAllowed, resolve_public, target_of

logger = logging.getLogger(__name__)


def _truncated(message: str) -> str:
    return message if len(message) <= MAX_WEBHOOK_ERROR_LENGTH else message[: MAX_WEBHOOK_ERROR_LENGTH - 1] + "…"


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

    breaker = get_breaker()
    decision = breaker.acquire(target.breaker_key)
    if not decision.allowed:
        return _defer(delivery, lease_until, target, decision.retry_at, now)

    WebhookDelivery.objects.filter(pk=delivery_id, locked_until=lease_until).update(attempts=F("attempts") + 1)
    attempts = delivery.attempts + 1
    try:
        # Resolved and checked again right before sending, and the request goes to the address checked.
        addresses = resolve_public(target)
        body = orjson.dumps(delivery.payload, option=orjson.OPT_SORT_KEYS)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            ID_HEADER: delivery.event_id,
            EVENT_HEADER: delivery.event,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature(endpoint.secret, timestamp, body),
        }
        answer = client.post(target, addresses, headers, body)
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
    delay = max(retry_at - time.time(), 0.0) + random.uniform(0, 1)
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
