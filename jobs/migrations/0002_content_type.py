"""The job model's content type follows it (posts.job -> jobs.job): its permissions, and the admin's history of
changes to jobs, stay attached to it. A database made after the move has no posts.job row: nothing to do."""

from django.db import migrations


def follow_the_model(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    moved = ContentType.objects.filter(app_label="posts", model="job")
    if not ContentType.objects.filter(app_label="jobs", model="job").exists():
        moved.update(app_label="jobs")


def back_to_posts(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    if not ContentType.objects.filter(app_label="posts", model="job").exists():
        ContentType.objects.filter(app_label="jobs", model="job").update(app_label="posts")


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0001_initial"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(follow_the_model, back_to_posts)]
