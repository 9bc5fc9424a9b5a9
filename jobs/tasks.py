"""Celery tasks of the jobs app: thin wrappers that load by id and call a service. Every one is idempotent, since
`acks_late` redelivers a task whose worker died before it finished.

Each keeps the name it had when jobs lived in the posts app ("posts.tasks..."): messages already queued under that
name, and beat's schedule, go on finding it.
"""

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from core.tasks import TRANSIENT_ERRORS, backoff_seconds
from jobs import services

logger = logging.getLogger(__name__)

EXPORT_MAX_RETRIES = 3


@shared_task(name="posts.tasks.run_export", bind=True, max_retries=EXPORT_MAX_RETRIES)
def run_export(self, job_id: int) -> None:
    try:
        services.export_run(job_id=job_id)
    except SoftTimeLimitExceeded:
        logger.error("export job %s hit the soft time limit", job_id)
        services.export_failed(job_id=job_id, error="The export took longer than the time limit.")
    except TRANSIENT_ERRORS as exc:
        if self.request.retries >= self.max_retries:
            logger.exception("export job %s failed after %s retries", job_id, self.request.retries)
            services.export_failed(job_id=job_id, error="The export failed; please try again later.")
            return
        logger.warning("export job %s failed, retrying: %s", job_id, exc)
        raise self.retry(exc=exc, countdown=backoff_seconds(self.request.retries)) from exc
    except Exception:
        # A bug, not a hiccup: retrying would fail the same way. The owner learns it failed; the log has why.
        logger.exception("export job %s failed", job_id)
        services.export_failed(job_id=job_id, error="The export failed.")


@shared_task(name="posts.tasks.purge_finished_jobs")
def purge_finished_jobs() -> int:
    purged = services.jobs_purge_finished()
    logger.info("purged %s finished jobs and their files", purged)
    return purged


@shared_task(name="posts.tasks.requeue_stalled_jobs")
def requeue_stalled_jobs() -> int:
    requeued = services.jobs_requeue_stalled()
    if requeued:
        logger.warning("requeued %s jobs that no worker had taken", requeued)
    return requeued
