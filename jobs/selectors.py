"""Reads of the jobs app: a job as its owner sees it, one job, the owner's list."""

from core.errors import NotFound
from core.pagination import Keyset
from core.paths import API_V2_NAMESPACE, api_url
from core.renderers import iso_utc
from jobs.models import Job

JOBS_NEWEST_FIRST = Keyset(Job, ("-created_at", "-id"), salt="jobs.cursor")
_JOB_COLUMNS = ("id", "kind", "status", "progress", "created_at", "finished_at", "error")


def job_payload(job: Job, *, version: str = API_V2_NAMESPACE) -> dict:
    """A job as its owner sees it, JSON-ready: the API renders it and the notification socket sends it as is.
    `version`: the API version whose download URL it names (the request's; v2's on the socket)."""
    return {
        "id": job.pk,
        "kind": job.kind,
        "status": job.status,
        "progress": job.progress,
        "created_at": iso_utc(job.created_at),
        "finished_at": iso_utc(job.finished_at) if job.finished_at else None,
        "error": job.error or None,
        "download_url": api_url("job_download", version=version, job_id=job.pk)
        if job.status == Job.Status.SUCCEEDED
        else None,
    }


async def job_cursor_page(*, owner, cursor: str | None, limit: int, status: str | None = None) -> dict:
    """The owner's jobs, newest first."""
    jobs = Job.objects.filter(owner_id=owner.pk)
    if status:
        jobs = jobs.filter(status=status)
    rows = jobs.order_by(*JOBS_NEWEST_FIRST.order).only(*_JOB_COLUMNS)
    return await JOBS_NEWEST_FIRST.page(rows, cursor=cursor, limit=limit, item=job_payload)


async def job_get_for_owner(*, owner, job_id: int) -> Job:
    """The job, when it is the owner's: someone else's job does not exist for them."""
    job = await Job.objects.filter(pk=job_id, owner_id=owner.pk).afirst()
    if job is None:
        raise NotFound("No such job.")
    return job
