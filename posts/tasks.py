"""Celery tasks of the posts app: thin wrappers that load by id and call a service. Every one is idempotent, since
`acks_late` redelivers a task whose worker died before it finished."""

import logging
import random

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError

from posts import exports, webhooks

logger = logging.getLogger(__name__)

# Failures worth another try: the database or the storage was briefly unreachable.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, OSError)
EXPORT_MAX_RETRIES = 3


def backoff_seconds(retries: int, *, base: float = 2.0, cap: float = 300.0) -> float:
    """Exponential backoff with full jitter: retries of many tasks that failed together spread out."""
    return random.uniform(0, min(cap, base * 2**retries))


@shared_task(bind=True, max_retries=EXPORT_MAX_RETRIES)
def run_export(self, job_id: int) -> None:
    try:
        exports.export_run(job_id=job_id)
    except SoftTimeLimitExceeded:
        logger.error("export job %s hit the soft time limit", job_id)
        exports.export_failed(job_id=job_id, error="The export took longer than the time limit.")
    except TRANSIENT_ERRORS as exc:
        if self.request.retries >= self.max_retries:
            logger.exception("export job %s failed after %s retries", job_id, self.request.retries)
            exports.export_failed(job_id=job_id, error="The export failed; please try again later.")
            return
        logger.warning("export job %s failed, retrying: %s", job_id, exc)
        raise self.retry(exc=exc, countdown=backoff_seconds(self.request.retries)) from exc
    except Exception:
        # A bug, not a hiccup: retrying would fail the same way. The owner learns it failed; the log has why.
        logger.exception("export job %s failed", job_id)
        exports.export_failed(job_id=job_id, error="The export failed.")


@shared_task
def purge_finished_jobs() -> int:
    purged = exports.jobs_purge_finished()
    logger.info("purged %s finished jobs and their files", purged)
    return purged


@shared_task
def requeue_stalled_jobs() -> int:
    requeued = exports.jobs_requeue_stalled()
    if requeued:
        logger.warning("requeued %s jobs that no worker had taken", requeued)
    return requeued


# --- webhooks (posts/webhooks.py) ------------------------------------------------------------------------


@shared_task(bind=True, max_retries=5)
def dispatch_webhook_event(self, event_id: str, event: str, post_id: int, occurred_at: str) -> int:
    """One event to every subscribed endpoint: a delivery row each (made once per event id), a task each."""
    try:
        delivery_ids = webhooks.event_dispatch(
            event_id=event_id, event=event, post_id=post_id, occurred_at=occurred_at
        )
    except (OperationalError, InterfaceError) as exc:
        raise self.retry(exc=exc, countdown=backoff_seconds(self.request.retries)) from exc
    for delivery_id in delivery_ids:
        webhooks.delivery_schedule(delivery_id=delivery_id)
    return len(delivery_ids)


# The request itself is cut off after connect + read timeouts; the limits only back that up.
_DELIVERY_TIME_LIMIT = settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS + settings.WEBHOOK_READ_TIMEOUT_SECONDS + 20


@shared_task(
    bind=True,
    max_retries=5,
    soft_time_limit=_DELIVERY_TIME_LIMIT,
    time_limit=_DELIVERY_TIME_LIMIT + 10,
)
def deliver_webhook(self, delivery_id: int) -> None:
    """One attempt; retries and deferrals are scheduled from the delivery's own record, so a redelivered or
    duplicated message sends nothing twice."""
    try:
        look_again_in = webhooks.delivery_attempt(delivery_id=delivery_id)
    except (OperationalError, InterfaceError) as exc:
        raise self.retry(exc=exc, countdown=backoff_seconds(self.request.retries)) from exc
    if look_again_in is not None:
        webhooks.delivery_schedule(delivery_id=delivery_id, countdown=look_again_in)


@shared_task
def requeue_stalled_webhook_deliveries() -> int:
    requeued = webhooks.webhook_deliveries_requeue_stalled()
    if requeued:
        logger.warning("requeued %s webhook deliveries whose task had been lost", requeued)
    return requeued
