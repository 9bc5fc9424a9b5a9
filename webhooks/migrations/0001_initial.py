"""The webhook models move here from the posts app, and their tables, posts_webhookendpoint and
posts_webhookdelivery, stay as they are: this migration only tells Django's state that the models are now
webhooks.WebhookEndpoint and webhooks.WebhookDelivery (posts 0005 removes them from posts' state). No row is touched."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("posts", "0004_job_moves_to_jobs"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="WebhookEndpoint",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("url", models.URLField(max_length=2000)),
                        ("events", models.JSONField(default=list)),
                        ("secret", models.CharField(editable=False, max_length=128)),
                        ("is_active", models.BooleanField(default=True)),
                        ("created_at", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                        (
                            "owner",
                            models.ForeignKey(
                                db_index=False,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="webhook_endpoints",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "db_table": "posts_webhookendpoint",
                        "ordering": ("-created_at", "-id"),
                    },
                ),
                migrations.CreateModel(
                    name="WebhookDelivery",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        (
                            "event",
                            models.CharField(choices=[("post.published", "A post was published")], max_length=64),
                        ),
                        ("event_id", models.CharField(max_length=64)),
                        ("payload", models.JSONField()),
                        (
                            "status",
                            models.CharField(
                                choices=[("pending", "Pending"), ("succeeded", "Succeeded"), ("failed", "Failed")],
                                default="pending",
                                max_length=16,
                            ),
                        ),
                        ("attempts", models.PositiveSmallIntegerField(default=0)),
                        ("last_response_status", models.PositiveSmallIntegerField(blank=True, null=True)),
                        ("last_error", models.CharField(blank=True, default="", max_length=500)),
                        ("created_at", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                        ("next_attempt_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("locked_until", models.DateTimeField(blank=True, null=True)),
                        ("delivered_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "endpoint",
                            models.ForeignKey(
                                db_index=False,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="deliveries",
                                to="webhooks.webhookendpoint",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "posts_webhookdelivery",
                        "ordering": ("-created_at", "-id"),
                    },
                ),
                migrations.AddIndex(
                    model_name="webhookendpoint",
                    index=models.Index(fields=["owner", "-created_at", "-id"], name="webhooks_owner_created_idx"),
                ),
                migrations.AddConstraint(
                    model_name="webhookendpoint",
                    constraint=models.UniqueConstraint(fields=("owner", "url"), name="webhooks_owner_url_unique"),
                ),
                migrations.AddIndex(
                    model_name="webhookdelivery",
                    index=models.Index(fields=["endpoint", "-created_at", "-id"], name="webhook_deliv_endpoint_idx"),
                ),
                migrations.AddIndex(
                    model_name="webhookdelivery",
                    index=models.Index(
                        condition=models.Q(("status", "pending")),
                        fields=["next_attempt_at"],
                        name="webhook_deliv_pending_idx",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="webhookdelivery",
                    constraint=models.UniqueConstraint(
                        fields=("endpoint", "event_id"), name="webhook_deliv_event_unique"
                    ),
                ),
                migrations.AddConstraint(
                    model_name="webhookdelivery",
                    constraint=models.CheckConstraint(
                        condition=models.Q(("status__in", ["pending", "succeeded", "failed"])),
                        name="webhook_deliv_status_valid",
                    ),
                ),
            ],
            database_operations=[],
        ),
    ]
