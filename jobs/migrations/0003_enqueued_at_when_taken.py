"""enqueued_at now records when the broker took the job's message, null until it has; rows keep their value."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0002_content_type"),
    ]

    operations = [
        migrations.AlterField(
            model_name="job",
            name="enqueued_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
