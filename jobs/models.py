"""Heavy work done by Celery workers for a user, who watches its progress and fetches its result (exports, so far)."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from fastpath.db import LoopManager


class JobKind(models.TextChoices):
    EXPORT = "export", "Export"


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class Job(models.Model):
    """Heavy work done by a Celery worker for its owner, who can watch its progress and fetch its result."""

    Kind = JobKind
    Status = JobStatus
    FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED)

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=16, choices=JobKind)
    # What the job was asked to do (an export's format and scope); compared on an Idempotency-Key replay.
    params = models.JSONField(default=dict, blank=True)
    # Empty when the client sent none; unique per owner otherwise, so a retried POST finds the first job.
    idempotency_key = models.CharField(max_length=255, blank=True, default="")
    status = models.CharField(max_length=16, choices=JobStatus, default=JobStatus.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    # Task deliveries that started the work: more than one means a worker died (or was retried) mid-way.
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    result_file = models.FileField(upload_to="exports/%Y/%m/%d/", blank=True, max_length=300)
    result_rows = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # When the broker last accepted the job's message; null until it has (the request's commit, a retry or the
    # sweep sends it, and the sweep sends again what the broker never took: jobs_requeue_stalled).
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # Refreshed while a worker makes progress: a fresh one tells a duplicate delivery that the job is in hand.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = LoopManager()

    class Meta:
        # The table it had when jobs lived in the posts app: moving the model moved no row (migrations 0001).
        db_table = "posts_job"
        ordering = ("-created_at", "-id")
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="jobs_owner_created_idx"),
            # The periodic purge: finished jobs older than the retention, oldest first.
            models.Index(fields=["finished_at"], name="jobs_finished_idx", condition=~models.Q(finished_at=None)),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="jobs_owner_idempotency_key_unique",
            ),
            models.CheckConstraint(condition=models.Q(progress__lte=100), name="jobs_progress_max_100"),
            models.CheckConstraint(condition=models.Q(status__in=JobStatus.values), name="jobs_status_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED
