"""The jobs admin: staff watch jobs by status and kind, cannot edit what workers write, and send failed jobs back
to the queue (onto the real broker)."""

import pytest
from django.urls import reverse
from django.utils import timezone

from jobs.models import Job

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = reverse("admin:jobs_job_changelist")


def change_link(job: Job) -> str:
    return reverse("admin:jobs_job_change", args=[job.pk])


def test_jobs_are_listed_and_filtered_by_status(staff_client, make_user, make_job):
    owner = make_user("exporter")
    failed = make_job(owner, status=Job.Status.FAILED, error="boom", finished_at=timezone.now())
    queued = make_job(owner)
    page = staff_client.get(CHANGELIST, {"status__exact": "failed"}).content.decode()
    assert change_link(failed) in page
    assert change_link(queued) not in page
    assert "exporter" in staff_client.get(CHANGELIST, {"q": "exporter"}).content.decode()


def test_a_job_cannot_be_added_or_edited_by_hand(staff_client, make_user, make_job):
    job = make_job(make_user())
    assert staff_client.get(reverse("admin:jobs_job_add")).status_code == 403
    form = staff_client.get(reverse("admin:jobs_job_change", args=[job.pk])).content.decode()
    assert 'name="status"' not in form and 'name="progress"' not in form


def test_retry_sends_failed_jobs_back_to_the_queue(staff_client, make_user, make_job, broker_tasks):
    owner = make_user()
    failed = make_job(owner, status=Job.Status.FAILED, error="The export failed.", finished_at=timezone.now())
    succeeded = make_job(owner, status=Job.Status.SUCCEEDED, progress=100, finished_at=timezone.now())

    response = staff_client.post(
        CHANGELIST, {"action": "retry", "_selected_action": [failed.pk, succeeded.pk]}, follow=True
    )

    assert "Sent 1 failed job(s) back to the queue." in response.content.decode()
    failed.refresh_from_db()
    assert (failed.status, failed.error, failed.finished_at) == (Job.Status.QUEUED, "", None)
    assert Job.objects.get(pk=succeeded.pk).status == Job.Status.SUCCEEDED
    assert broker_tasks() == [("posts.tasks.run_export", [failed.pk])]


def test_the_old_admin_addresses_of_jobs_redirect_to_the_new_ones(staff_client, make_user, make_job):
    job = make_job(make_user())
    response = staff_client.get(f"/admin/posts/job/{job.pk}/change/?_changelist_filters=status")
    assert response.status_code == 301
    assert response["Location"] == f"/admin/jobs/job/{job.pk}/change/?_changelist_filters=status"
    assert staff_client.get(response["Location"]).status_code == 200
    assert staff_client.get("/admin/posts/job/")["Location"] == CHANGELIST
