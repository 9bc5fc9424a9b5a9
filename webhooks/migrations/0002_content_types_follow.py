"""The webhook models' content types follow them (posts.webhookendpoint -> webhooks.webhookendpoint, and the same
for deliveries): their permissions, and the admin's history of changes, stay attached to them. A database made
after the move has no posts.webhook* row: nothing to do."""

from django.db import migrations

MOVED_MODELS = ("webhookendpoint", "webhookdelivery")


def _move(apps, model: str, source: str, target: str) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    if not ContentType.objects.filter(app_label=target, model=model).exists():
        ContentType.objects.filter(app_label=source, model=model).update(app_label=target)


def follow_the_models(apps, schema_editor):
    for model in MOVED_MODELS:
        _move(apps, model, "posts", "webhooks")


def back_to_posts(apps, schema_editor):
    for model in MOVED_MODELS:
        _move(apps, model, "webhooks", "posts")


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0001_initial"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(follow_the_models, back_to_posts)]
