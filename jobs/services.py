"""Exports of posts to CSV or JSON Lines: the writes behind a Job of kind `export`, and the streaming writer that
`manage.py export_posts` shares.

Rows stream from a server-side cursor into a temporary file that is handed to Django storage only once complete,
so memory stays flat however many posts there are and a download never sees half a file. Running an export is
idempotent: a redelivered task (its worker died mid-way) starts over, and whichever run finishes first wins; a
later one discards its file. Side effects (enqueueing, the owner's notification) run once the transaction commits.
"""

import csv
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import partial
from typing import TextIO

import orjson
from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import DatabaseError, IntegrityError, connections, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts.models import User
from core import events
from core.errors import Conflict, PermissionDenied, RateLimited
from core.renderers import iso_utc
from core.tracing import span
from jobs.models import Job
from jobs.selectors import job_payload
from posts.selectors import EXPORT_COLUMNS, post_rows_for_export

logger = logging.getLogger(__name__)

FORMATS = ("csv", "jsonl")
SCOPES = ("mine", "all")
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson; charset=utf-8"}
# A spreadsheet runs a cell starting with one of these as a formula (CSV injection); a leading apostrophe makes
# it text. JSON Lines keeps values exactly as stored.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# How long a client waits before asking for another export while it has too many running.
_TOO_MANY_JOBS_RETRY_SECONDS = 30


# --- the writer ------------------------------------------------------------------------------------------


def export_rows(*, scope: str, owner_id: int | None = None) -> QuerySet:
    """The posts an export covers, in EXPORT_COLUMNS order, oldest first: `mine` is every post of the owner (drafts
    included: they are theirs), `all` every post (staff)."""
    return post_rows_for_export(author_id=owner_id if scope == "mine" else None)


def _csv_cell(value) -> object:
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def write_export(
    rows: Iterable[tuple], out: TextIO, *, fmt: str, total: int, on_progress: Callable[[int], None] | None = None
) -> int:
    """Write `rows` to `out` in `fmt`; call `on_progress(percent)` each time the whole percentage grows (it stays
    below 100 until the caller has stored the file). Returns the number of rows written."""
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(EXPORT_COLUMNS)
        write_row = lambda row: writer.writerow([_csv_cell(value) for value in row])  # noqa: E731
    else:
        write_row = lambda row: out.write(  # noqa: E731
            orjson.dumps(dict(zip(EXPORT_COLUMNS, row, strict=True)), option=orjson.OPT_UTC_Z).decode() + "\n"
        )
    written = reported = 0
    for row in rows:
        write_row(row)
        written += 1
        if on_progress is not None and total:
            percent = min(99, written * 100 // total)
            if percent > reported:
                reported = percent
                on_progress(percent)
    return written


# --- jobs ------------------------------------------------------------------------------------------------


@transaction.atomic
def export_request(*, owner: User, fmt: str, scope: str, idempotency_key: str = "") -> tuple[Job, bool]:
    """The export job for this request and whether it was created now. The same Idempotency-Key returns the job
    it created before (409 if it asked for something else), so a client may retry a POST safely."""
    if scope == "all" and not owner.is_staff:
        raise PermissionDenied("Only staff can export every post.")
    params = {"format": fmt, "scope": scope}
    # One request per user at a time from here on: the active-job count below cannot be raced past.
    User.objects.select_for_update().filter(pk=owner.pk).exists()
    if idempotency_key:
        earlier = Job.objects.filter(owner=owner, idempotency_key=idempotency_key).first()
        if earlier is not None:
            return _replayed(earlier, params), False
    active = Job.objects.filter(owner=owner, status__in=(Job.Status.QUEUED, Job.Status.RUNNING)).count()
    if active >= settings.JOB_MAX_ACTIVE_PER_USER:
        raise RateLimited(
            retry_after=_TOO_MANY_JOBS_RETRY_SECONDS,
            detail=f"You have {active} jobs in progress; wait for one to finish.",
            code="too_many_jobs",
        )
    try:
        with transaction.atomic():
            job = Job.objects.create(owner=owner, kind=Job.Kind.EXPORT, params=params, idempotency_key=idempotency_key)
    except IntegrityError:
        # The key's job was created since we looked (the owner's row lock makes this all but impossible).
        return _replayed(Job.objects.get(owner=owner, idempotency_key=idempotency_key), params), False
    transaction.on_commit(partial(_enqueue, job.pk))
    return job, True


def _replayed(job: Job, params: dict) -> Job:
    if job.params != params:
        raise Conflict("This Idempotency-Key was used for a different export.", code="idempotency_key_reused")
    return job


def _enqueue(job_id: int) -> None:
    """Send the job's message; the job row records that the broker took it (the row is the outbox: a job whose
    message was never taken has no `enqueued_at`, and the sweep sends it again within JOB_SWEEP_SECONDS)."""
    from jobs.tasks import run_export

    try:
        run_export.delay(job_id)
    except run_export.OperationalError:
        logger.error("could not enqueue export job %s (the broker is unreachable); the sweep sends it again", job_id)
        return
    Job.objects.filter(pk=job_id, enqueued_at__isnull=True).update(enqueued_at=timezone.now())


def export_run(*, job_id: int) -> None:
    """Do the export of a job (the task's work). A finished job is left alone, so a redelivered message is
    harmless; an unfinished one starts over."""
    job = _export_started(job_id)
    if job is None:
        return
    fmt, scope = job.params["format"], job.params["scope"]
    with (
        _lease_kept(job.pk),
        span("export.run", **{"job.id": job.pk, "export.format": fmt, "export.scope": scope}) as current,
    ):
        rows = export_rows(scope=scope, owner_id=job.owner_id)
        total = rows.count()
        progress = _ProgressReporter(job.pk)
        with tempfile.TemporaryFile("w+", encoding="utf-8", newline="") as draft:
            written = write_export(
                rows.iterator(chunk_size=settings.EXPORT_CHUNK_ROWS), draft, fmt=fmt, total=total, on_progress=progress
            )
            draft.flush()
            draft.seek(0)
            name = default_storage.save(f"exports/job-{job.pk}.{fmt}", File(draft))
        current.set_attribute("export.rows", written)
    _export_succeeded(job.pk, name=name, rows=written)


@contextmanager
def _lease_kept(job_id: int) -> Iterator[None]:
    """While an export runs, a thread of its own renews the job's lease (heartbeat_at) every third of
    JOB_LEASE_SECONDS, so a slow step that reports no progress (a count, a large file's upload) is not taken for a
    dead worker, and a dead worker's job is known as such once the lease has passed."""
    stop = threading.Event()

    def renew() -> None:
        try:
            while not stop.wait(settings.JOB_LEASE_SECONDS / 3):
                Job.objects.filter(pk=job_id, status=Job.Status.RUNNING).update(heartbeat_at=timezone.now())
        except DatabaseError as exc:
            # The export itself will meet the same error; its task retries.
            logger.warning("export job %s: its lease could not be renewed: %s", job_id, exc)
        finally:
            connections.close_all()  # this thread's own connection

    keeper = threading.Thread(target=renew, name=f"job-{job_id}-lease", daemon=True)
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()


class _ProgressReporter:
    """Writes progress to the job row at most a few times a second: 100 updates for a small export would cost
    more than the export."""

    min_interval = 0.25

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        self.last_write = 0.0

    def __call__(self, percent: int) -> None:
        now = time.monotonic()
        if now - self.last_write >= self.min_interval:
            self.last_write = now
            # The lease (heartbeat_at) is _lease_kept's.
            Job.objects.filter(pk=self.job_id, status=Job.Status.RUNNING).update(progress=percent)


@transaction.atomic
def _export_started(job_id: int) -> Job | None:
    job = Job.objects.select_for_update().filter(pk=job_id).first()
    if job is None or job.is_finished:
        return None
    now = timezone.now()
    lease_start = now - timedelta(seconds=settings.JOB_LEASE_SECONDS)
    if job.status == Job.Status.RUNNING and job.heartbeat_at and job.heartbeat_at > lease_start:
        # A second message for a job another worker is making progress on (a requeue raced the original): that
        # worker's own message comes back should it die, so this one can go.
        logger.info("export job %s is in hand elsewhere; duplicate delivery dropped", job_id)
        return None
    job.status = Job.Status.RUNNING
    job.progress = 0
    job.attempts += 1
    job.started_at = job.started_at or now
    job.heartbeat_at = now
    job.save(update_fields=["status", "progress", "attempts", "started_at", "heartbeat_at"])
    if job.attempts > 1:
        logger.warning("export job %s starts over (attempt %s)", job_id, job.attempts)
    return job


@transaction.atomic
def _export_succeeded(job_id: int, *, name: str, rows: int) -> None:
    job = Job.objects.select_for_update().filter(pk=job_id).first()
    if job is None or job.status == Job.Status.SUCCEEDED:
        # Another run of the same job finished first (or the job was deleted): this file is surplus.
        transaction.on_commit(partial(default_storage.delete, name))
        return
    job.status = Job.Status.SUCCEEDED
    job.progress = 100
    job.result_file.name = name
    job.result_rows = rows
    job.error = ""
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "progress", "result_file", "result_rows", "error", "finished_at"])
    _announce(job)


@transaction.atomic
def export_failed(*, job_id: int, error: str) -> None:
    """Mark an unfinished job failed with a message meant for its owner (details go to the log)."""
    job = Job.objects.select_for_update().filter(pk=job_id).first()
    if job is None or job.is_finished:
        return
    job.status = Job.Status.FAILED
    job.error = error
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "error", "finished_at"])
    _announce(job)


def _announce(job: Job) -> None:
    """The owner's notification sockets hear that the job ended, once that is committed."""
    events.notify_user_on_commit(job.owner_id, {"type": "job", "job": job_payload(job)})


# --- operations (admin, beat) ----------------------------------------------------------------------------


def jobs_retry(*, job_ids: Iterable[int]) -> int:
    """Send failed jobs back to the queue from the start; returns how many."""
    with transaction.atomic():
        retried = list(
            Job.objects.select_for_update()
            .filter(pk__in=list(job_ids), status=Job.Status.FAILED)
            .values_list("pk", flat=True)
        )
        Job.objects.filter(pk__in=retried).update(
            status=Job.Status.QUEUED,
            progress=0,
            error="",
            started_at=None,
            heartbeat_at=None,
            finished_at=None,
            enqueued_at=None,
        )
        for job_id in retried:
            transaction.on_commit(partial(_enqueue, job_id))
    return len(retried)


def jobs_requeue_stalled() -> int:
    """Send again (beat, every JOB_SWEEP_SECONDS) the messages of jobs nobody is working on: queued jobs whose
    message the broker never took, or took longer than JOB_REQUEUE_AFTER_SECONDS ago (it may have lost it: a
    duplicate finds the job in hand and is dropped), and running jobs whose lease has passed (their worker died;
    its own message comes back only after the visibility timeout, and then finds the job done)."""
    now = timezone.now()
    # The request's own commit sends the message a moment after the row is written: not the sweep's to send.
    never_taken = Q(status=Job.Status.QUEUED, enqueued_at__isnull=True, created_at__lt=now - timedelta(seconds=5))
    maybe_lost = Q(
        status=Job.Status.QUEUED, enqueued_at__lt=now - timedelta(seconds=settings.JOB_REQUEUE_AFTER_SECONDS)
    )
    lease = timedelta(seconds=settings.JOB_LEASE_SECONDS)
    abandoned = Q(status=Job.Status.RUNNING, heartbeat_at__lt=now - lease) & (
        Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=now - lease)
    )
    with transaction.atomic():
        stalled = list(
            Job.objects.select_for_update(skip_locked=True)
            .filter(never_taken | maybe_lost | abandoned)
            .values_list("pk", flat=True)
        )
        # Taken again only once the broker has it (_enqueue); until then, every sweep tries.
        Job.objects.filter(pk__in=stalled).update(enqueued_at=None)
        for job_id in stalled:
            transaction.on_commit(partial(_enqueue, job_id))
    return len(stalled)


def jobs_purge_finished() -> int:
    """Delete jobs (and their files) that finished longer ago than the retention; returns how many."""
    cutoff = timezone.now() - timedelta(seconds=settings.JOB_RETENTION_SECONDS)
    purged = 0
    for job in _in_batches(Job.objects.filter(finished_at__lt=cutoff).order_by("finished_at")):
        if job.result_file.name:
            # The file first: a row without its file is re-purged next time, a file without its row never is.
            default_storage.delete(job.result_file.name)
        job.delete()
        purged += 1
    return purged


def _in_batches(jobs: QuerySet, size: int = 500) -> Iterator[Job]:
    while batch := list(jobs[:size]):
        yield from batch
        if len(batch) < size:
            return
