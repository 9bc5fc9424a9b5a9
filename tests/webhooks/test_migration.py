"""Moving the webhook models from the posts app to the webhooks app loses nothing: a PostgreSQL database populated
at the schema of before the move (posts 0004) migrates to today's with every endpoint, delivery, secret and foreign
key where it was, the models' content types (with their permissions and the admin's history) following them, and
the admin answering at the new addresses and redirecting from the old ones."""

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from webhooks.models import WebhookDelivery, WebhookEndpoint

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE_THE_MOVE = ("posts", "0004_job_moves_to_jobs")


def migrate(targets) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


def test_rows_secrets_and_keys_survive_the_move(make_user, staff_client):
    owner, other, staff = make_user(), make_user(), make_user()
    migrate([("webhooks", None)])  # back to before the move: no webhooks app, the models in posts
    old = MigrationExecutor(connection).loader.project_state([BEFORE_THE_MOVE]).apps
    OldEndpoint, OldDelivery = (old.get_model("posts", name) for name in ("WebhookEndpoint", "WebhookDelivery"))
    endpoints = [
        OldEndpoint.objects.create(
            owner_id=user.pk,
            url=f"https://93.184.215.14/hook/{n}",
            secret=f"whsec_{n}",
            events=["post.published"],
            is_active=n != 1,
        )
        for n, user in enumerate((owner, owner, other))
    ]
    delivered = timezone.now()
    deliveries = [
        OldDelivery.objects.create(
            endpoint_id=endpoint.pk,
            event="post.published",
            event_id=f"evt_{n}",
            payload={"id": f"evt_{n}", "data": {"post": {"id": n}}},
            status="succeeded" if n % 2 else "failed",
            attempts=n + 1,
            last_response_status=200 if n % 2 else 500,
            last_error="" if n % 2 else "HTTP 500",
            delivered_at=delivered if n % 2 else None,
        )
        for n, endpoint in enumerate(endpoints * 2)
    ]
    ContentType.objects.clear_cache()
    content_types = {
        model: ContentType.objects.get(app_label="posts", model=model)
        for model in ("webhookendpoint", "webhookdelivery")
    }
    permission = Permission.objects.create(
        content_type=content_types["webhookdelivery"], codename="retry_delivery_old", name="Can retry"
    )
    LogEntry.objects.create(
        user_id=staff.pk,
        content_type=content_types["webhookendpoint"],
        object_id=str(endpoints[0].pk),
        object_repr="endpoint",
        action_flag=CHANGE,
    )

    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
    ContentType.objects.clear_cache()

    assert list(WebhookEndpoint.objects.order_by("pk").values("pk", "owner_id", "url", "secret", "is_active")) == [
        {"pk": e.pk, "owner_id": e.owner_id, "url": e.url, "secret": e.secret, "is_active": e.is_active}
        for e in endpoints
    ]
    fields = ("pk", "endpoint_id", "event_id", "payload", "status", "attempts", "last_error", "delivered_at")
    assert list(WebhookDelivery.objects.order_by("pk").values(*fields)) == [
        {name: getattr(d, "pk" if name == "pk" else name) for name in fields} for d in deliveries
    ]
    assert WebhookDelivery.objects.get(pk=deliveries[0].pk).endpoint.owner == owner
    for model_name, model in (("webhookendpoint", WebhookEndpoint), ("webhookdelivery", WebhookDelivery)):
        followed = ContentType.objects.get_for_model(model)
        assert followed.pk == content_types[model_name].pk and followed.app_label == "webhooks"
    assert Permission.objects.get(pk=permission.pk).content_type.app_label == "webhooks"
    assert LogEntry.objects.get(object_id=str(endpoints[0].pk)).content_type.app_label == "webhooks"

    changelist = staff_client.get("/admin/webhooks/webhookdelivery/")
    assert changelist.status_code == 200
    assert f"/admin/webhooks/webhookdelivery/{deliveries[0].pk}/change/" in changelist.content.decode()
    old_page = staff_client.get(f"/admin/posts/webhookendpoint/{endpoints[0].pk}/change/?_changelist_filters=x")
    assert old_page.status_code == 301
    assert old_page["Location"] == f"/admin/webhooks/webhookendpoint/{endpoints[0].pk}/change/?_changelist_filters=x"
    assert staff_client.get(old_page["Location"]).status_code == 200
