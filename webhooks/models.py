"""Webhooks: URLs users register, and one delivery record per event per URL (webhooks/services/).

The tables keep the names they had when the models lived in the posts app (posts_webhookendpoint,
posts_webhookdelivery): migration 0001 only moved Django's state, no row was touched.
"""

from django.conf import settings
from django.db import models
from django.utils import timezone

from fastpath.db import LoopManager

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
    """A URL a user registered to be told about events, signed with a secret made for it
    (webhooks/services/signing.py)."""

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
        db_table = "posts_webhookendpoint"
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
        db_table = "posts_webhookdelivery"
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
