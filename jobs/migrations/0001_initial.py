"""The Job model moves here from the posts app, and its table, posts_job, stays as it is: this migration only tells
Django's state that the model is now jobs.Job (posts 0004 removes it from posts' state). No row is touched."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("posts", "0003_webhooks"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Job",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("kind", models.CharField(choices=[("export", "Export")], max_length=16)),
                        ("params", models.JSONField(blank=True, default=dict)),
                        ("idempotency_key", models.CharField(blank=True, default="", max_length=255)),
                        (
                            "status",
                            models.CharField(
                                choices=[
                                    ("queued", "Queued"),
                                    ("running", "Running"),
                                    ("succeeded", "Succeeded"),
                                    ("failed", "Failed"),
                                ],
                                default="queued",
                                max_length=16,
                            ),
                        ),
                        ("progress", models.PositiveSmallIntegerField(default=0)),
                        ("attempts", models.PositiveSmallIntegerField(default=0)),
                        ("error", models.TextField(blank=True, default="")),
                        ("result_file", models.FileField(blank=True, max_length=300, upload_to="exports/%Y/%m/%d/")),
                        ("result_rows", models.PositiveIntegerField(blank=True, null=True)),
                        ("created_at", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                        ("enqueued_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("started_at", models.DateTimeField(blank=True, null=True)),
                        ("heartbeat_at", models.DateTimeField(blank=True, null=True)),
                        ("finished_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "owner",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="jobs",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "db_table": "posts_job",
                        "ordering": ("-created_at", "-id"),
                        "indexes": [
                            models.Index(fields=["owner", "-created_at"], name="jobs_owner_created_idx"),
                            models.Index(
                                condition=models.Q(("finished_at", None), _negated=True),
                                fields=["finished_at"],
                                name="jobs_finished_idx",
                            ),
                        ],
                        "constraints": [
                            models.UniqueConstraint(
                                condition=models.Q(("idempotency_key", ""), _negated=True),
                                fields=("owner", "idempotency_key"),
                                name="jobs_owner_idempotency_key_unique",
                            ),
                            models.CheckConstraint(
                                condition=models.Q(("progress__lte", 100)), name="jobs_progress_max_100"
                            ),
                            models.CheckConstraint(
                                condition=models.Q(("status__in", ["queued", "running", "succeeded", "failed"])),
                                name="jobs_status_valid",
                            ),
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
