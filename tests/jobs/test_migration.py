"""Moving Job from the posts app to the jobs app loses nothing: a PostgreSQL database populated at the schema of
before the move (posts 0003) migrates to today's with every row, file reference and foreign key where it was, the
job's content type (with its permissions and the admin's history) following the model, and the admin answering."""

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from jobs.models import Job
from webhooks.models import WebhookDelivery, WebhookEndpoint

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE_THE_MOVE = ("posts", "0003_webhooks")


def migrate(targets) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


def test_rows_files_and_keys_survive_the_move(make_user, staff_client):
    owner, staff = make_user(), make_user()
    migrate([("jobs", None)])  # back to before the move: no jobs app, Job in posts
    old = MigrationExecutor(connection).loader.project_state([BEFORE_THE_MOVE]).apps
    OldJob, OldEndpoint, OldDelivery = (
        old.get_model("posts", name) for name in ("Job", "WebhookEndpoint", "WebhookDelivery")
    )
    finished = timezone.now()
    jobs = [
        OldJob.objects.create(
            owner_id=owner.pk,
            kind="export",
            params={"format": "csv", "scope": "mine"},
            status="succeeded",
            progress=100,
            result_file=f"exports/2026/11/30/posts-{n}.csv",
            result_rows=n,
            finished_at=finished,
            idempotency_key=f"key-{n}",
        )
        for n in range(3)
    ]
    endpoint = OldEndpoint.objects.create(
        owner_id=owner.pk, url="https://93.184.215.14/in", secret="whsec_x", events=[]
    )
    delivery = OldDelivery.objects.create(
        endpoint_id=endpoint.pk, event="post.published", event_id="evt_1", payload={}
    )
    # What a database made before the move holds (the way back put it there too): the job's content type under
    # posts, with a permission and the admin's history attached to it.
    ContentType.objects.clear_cache()
    content_type = ContentType.objects.get(app_label="posts", model="job")
    permission = Permission.objects.create(content_type=content_type, codename="view_job_old", name="Can view job")
    LogEntry.objects.create(
        user_id=staff.pk, content_type=content_type, object_id=str(jobs[0].pk), object_repr="job", action_flag=CHANGE
    )

    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
    ContentType.objects.clear_cache()

    moved = list(Job.objects.order_by("pk").values("pk", "owner_id", "result_file", "result_rows", "idempotency_key"))
    assert moved == [
        {
            "pk": job.pk,
            "owner_id": owner.pk,
            "result_file": job.result_file.name,
            "result_rows": job.result_rows,
            "idempotency_key": job.idempotency_key,
        }
        for job in jobs
    ]
    assert Job.objects.get(pk=jobs[0].pk).owner == owner
    assert WebhookDelivery.objects.get(pk=delivery.pk).endpoint == WebhookEndpoint.objects.get(pk=endpoint.pk)
    followed = ContentType.objects.get_for_model(Job)
    assert followed.pk == content_type.pk and followed.app_label == "jobs"
    assert Permission.objects.get(pk=permission.pk).content_type_id == followed.pk
    assert LogEntry.objects.get(object_id=str(jobs[0].pk)).content_type_id == followed.pk
    changelist = staff_client.get("/admin/jobs/job/")
    assert changelist.status_code == 200
    assert f"/admin/jobs/job/{jobs[0].pk}/change/" in changelist.content.decode()
