"""From a published post to deliveries: one row per subscribed endpoint, one task per row; and the operators'
tools that send deliveries back to the queue."""

import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from core.renderers import iso_utc
from posts.selectors import published_post_get
from webhooks.models import WebhookDelivery, WebhookDeliveryStatus, WebhookEndpoint, WebhookEvent

logger = logging.getLogger(__name__)

_DISPATCH_CHUNK = 500
# A pending delivery whose retry is this late had its message lost; the periodic sweep sends it again.
_STALLED_AFTER = timedelta(minutes=5)
_SWEEP_BATCH = 1000


def posts_published(post_ids: list[int]) -> None:
    """A transaction that published these posts has committed (the posts_published signal): one dispatch task
    per post. Never raises: the posts are published whatever happens to their webhooks."""
    from webhooks.tasks import dispatch_webhook_event

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


def event_dispatch(*, event_id: str, event: str, post_id: int, occurred_at: str) -> list[int]:
    """Makes the event's delivery for every active endpoint subscribed to it; returns the ids of those not yet
    attempted. Run again with the same event id (a redelivered task), it makes no new row."""
    post = published_post_get(post_id=post_id)
    if post is None:
        # Deleted or unpublished before the event went out: what it would carry is no longer public.
        logger.info("%s %s for post %s not sent: the post is no longer published", event, event_id, post_id)
        return []
    payload = {"id": event_id, "type": event, "created_at": occurred_at, "data": {"post": post}}
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
    from webhooks.tasks import deliver_webhook

    if settings.CELERY_TASK_ALWAYS_EAGER and countdown > 0:
        return
    deliver_webhook.apply_async((delivery_id,), countdown=max(0.0, countdown))


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
