from django.conf import settings
from django.db import models
from django.utils import timezone

from fastpath.db import LoopManager

MAX_TITLE_LENGTH = 200
MAX_BODY_LENGTH = 100_000


class PostStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    PUBLISHED = "published", "Published"


class Post(models.Model):
    Status = PostStatus

    title = models.CharField(max_length=MAX_TITLE_LENGTH)
    body = models.TextField(max_length=MAX_BODY_LENGTH, blank=True)
    status = models.CharField(max_length=16, choices=Status, default=Status.DRAFT)
    # The composite indexes below lead with author_id, so the FK's own single-column index would be redundant.
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="posts", db_index=False
    )
    # A default rather than auto_now_add so that seed data can carry realistic, spread-out dates.
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = LoopManager()

    class Meta:
        # Newest first, with id breaking ties so that offsets and cursors see one total order.
        ordering = ("-created_at", "-id")
        indexes = [
            # Everyone's list (published only), staff's status filter: WHERE status = ? ORDER BY created_at, id.
            models.Index(fields=["status", "-created_at", "-id"], name="posts_status_created_idx"),
            # An author's posts: WHERE author_id = ? AND status = ? ORDER BY created_at, id.
            models.Index(fields=["author", "status", "-created_at", "-id"], name="posts_author_status_idx"),
            # Lists that mix statuses (staff, or a user seeing published posts plus their own drafts):
            # walked in order with the visibility rule as a filter, instead of sorting the whole table.
            models.Index(fields=["-created_at", "-id"], name="posts_created_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=PostStatus.values), name="posts_status_valid"),
            models.CheckConstraint(condition=~models.Q(title=""), name="posts_title_not_empty"),
        ]

    def __str__(self) -> str:
        return self.title


# --- webhooks --------------------------------------------------------------------------------------------

MAX_WEBHOOK_URL_LENGTH = 2000
# What an owner is shown of a failed attempt: enough to debug, bounded whatever the receiver answers.
MAX_WEBHOOK_ERROR_LENGTH = 500


class WebhookEvent(models.TextChoices):
    POST_PUBLISHED = "post.published", "A post was published"


class WebhookDeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class WebhookEndpoint(models.Model):
    """A URL a user registered to be told about events, signed with a secret generated here (posts/webhooks.py)."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints", db_index=False
    )
    url = models.URLField(max_length=MAX_WEBHOOK_URL_LENGTH)
    # A list of WebhookEvent values (JSON rather than an array: the embedded default runs on SQLite).
    events = models.JSONField(default=list)
    secret = models.CharField(max_length=128, editable=False)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = LoopManager()

    class Meta:
        ordering = ("-created_at", "-id")
        indexes = [models.Index(fields=["owner", "-created_at", "-id"], name="webhooks_owner_created_idx")]
        constraints = [
            models.UniqueConstraint(fields=["owner", "url"], name="webhooks_owner_url_unique"),
        ]

    def __str__(self) -> str:
        return self.url


class WebhookDelivery(models.Model):
    """One event for one endpoint, and how sending it went. `event_id` is the event's id (the same for every
    endpoint and every attempt, sent as X-Webhook-Id), unique per endpoint: a redelivered task finds the row it
    made instead of making a second."""

    Status = WebhookDeliveryStatus

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries", db_index=False)
    event = models.CharField(max_length=64, choices=WebhookEvent)
    event_id = models.CharField(max_length=64)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=WebhookDeliveryStatus, default=WebhookDeliveryStatus.PENDING)
    # Requests actually sent; deferrals while the host's circuit breaker is open are not attempts.
    attempts = models.PositiveSmallIntegerField(default=0)
    last_response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=MAX_WEBHOOK_ERROR_LENGTH, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # When a pending delivery may be attempted next (now, after a backoff, or once a breaker cools down).
    next_attempt_at = models.DateTimeField(default=timezone.now)
    # Set while a worker is sending it: another copy of the task leaves it alone until then.
    locked_until = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    objects = LoopManager()

    class Meta:
        ordering = ("-created_at", "-id")
        indexes = [
            models.Index(fields=["endpoint", "-created_at", "-id"], name="webhook_deliv_endpoint_idx"),
            # The sweep for pending deliveries whose task message was lost.
            models.Index(
                fields=["next_attempt_at"],
                name="webhook_deliv_pending_idx",
                condition=models.Q(status=WebhookDeliveryStatus.PENDING),
            ),
        ]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "event_id"], name="webhook_deliv_event_unique"),
            models.CheckConstraint(
                condition=models.Q(status__in=WebhookDeliveryStatus.values), name="webhook_deliv_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event} {self.event_id} -> endpoint {self.endpoint_id} ({self.status})"
