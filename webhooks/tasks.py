"""Celery tasks of the webhooks app: thin wrappers that load by id and call a service. Every one is idempotent,
since `acks_late` redelivers a task whose worker died before it finished.

Each keeps the name it had when webhooks lived in the posts app ("posts.tasks..."): messages already queued under
that name, and beat's schedule, go on finding it.
"""

import logging

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from core.tasks import backoff_seconds
from webhooks.services import delivery, dispatch

logger = logging.getLogger(__name__)


@shared_task(name="posts.tasks.dispatch_webhook_event", bind=True, max_retries=5)
def dispatch_webhook_event(self, event_id: str, event: str, post_id: int, occurred_at: str) -> int:
    """One event to every subscribed endpoint: a delivery row each (made once per event id), a task each."""
    try:
        delivery_ids = dispatch.event_dispatch(
            event_id=event_id, event=event, post_id=post_id, occurred_at=occurred_at
        )
    except (OperationalError, InterfaceError) as exc:
        raise self.retry(exc=exc, countdown=backoff_seconds(self.request.retries)) from exc
    for delivery_id in delivery_ids:
        dispatch.delivery_schedule(delivery_id=delivery_id)
    return len(delivery_ids)


# The request itself is cut off after connect + read timeouts; the limits only back that up.
_DELIVERY_TIME_LIMIT = settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS + settings.WEBHOOK_READ_TIMEOUT_SECONDS + 20


@shared_task(
    name="posts.tasks.deliver_webhook",
    bind=True,
    max_retries=5,
    soft_time_limit=_DELIVERY_TIME_LIMIT,
    time_limit=_DELIVERY_TIME_LIMIT + 10,
)
def deliver_webhook(self, delivery_id: int) -> None:
    """One attempt; retries and deferrals are scheduled from the delivery's own record, so a redelivered or
    duplicated message sends nothing twice."""
    try:
        look_again_in = delivery.delivery_attempt(delivery_id=delivery_id)
    except (OperationalError, InterfaceError) as exc:
        raise self.retry(exc=exc, countdown=backoff_seconds(self.request.retries)) from exc
    if look_again_in is not None:
        dispatch.delivery_schedule(delivery_id=delivery_id, countdown=look_again_in)


@shared_task(name="posts.tasks.requeue_stalled_webhook_deliveries")
def requeue_stalled_webhook_deliveries() -> int:
    requeued = dispatch.webhook_deliveries_requeue_stalled()
    if requeued:
        logger.warning("requeued %s webhook deliveries whose task had been lost", requeued)
    return requeued
