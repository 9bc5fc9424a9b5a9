"""The Jobs contract without a worker: starting an export, idempotency, who may see which job, the download's
409 until a job has succeeded, and the export itself run in-process (what the worker's task calls).

The end-to-end path through a real Celery worker is in test_exports_worker.py."""

import csv
import io
import time
from datetime import timedelta

import orjson
import pytest
from asgiref.sync import async_to_sync
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from jobs import services as exports
from jobs.models import Job
from posts.models import Post, PostStatus

pytestmark = pytest.mark.django_db(transaction=True)

V1 = "/api/v1"
JOB_KEYS = {"id", "kind", "status", "progress", "created_at", "finished_at", "error", "download_url"}


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def start_export(client, headers, body=None, key=None):
    if key is not None:
        headers = {**headers, "Idempotency-Key": key}
    return client.post(f"{V1}/exports", body or {"format": "csv"}, content_type="application/json", headers=headers)


def download(client, job_id, headers) -> tuple:
    response = client.get(f"{V1}/jobs/{job_id}/download", headers=headers)
    return response, async_to_sync(_content)(response)


async def _content(response) -> bytes:
    # The file streams from an async iterator, as an ASGI server would send it.
    if not response.streaming:
        return response.content
    return b"".join([chunk async for chunk in response.streaming_content])


# --- starting an export ----------------------------------------------------------------------------------


def test_an_export_answers_202_with_the_queued_job_and_its_location(client, make_user, bearer):
    user = make_user()
    response = start_export(client, bearer(user), {"format": "jsonl", "scope": "mine"})
    assert response.status_code == 202
    job = response.json()
    assert set(job) == JOB_KEYS
    assert job["kind"] == "export"
    assert job["status"] == "queued"
    assert job["progress"] == 0
    assert job["finished_at"] is None and job["download_url"] is None and job["error"] is None
    assert job["created_at"].endswith("Z")
    assert response["Location"] == f"{V1}/jobs/{job['id']}"
    assert client.get(response["Location"], headers=bearer(user)).json() == job
    assert Job.objects.get(pk=job["id"]).params == {"format": "jsonl", "scope": "mine"}


def test_the_same_idempotency_key_returns_the_same_job(client, make_user, bearer):
    user = make_user()
    first = start_export(client, bearer(user), key="export-1")
    again = start_export(client, bearer(user), key="export-1")
    assert again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again["Location"] == first["Location"]
    assert Job.objects.filter(owner=user).count() == 1
    # A replay answers with the job as it stands now.
    Job.objects.filter(pk=first.json()["id"]).update(status=Job.Status.RUNNING, progress=30)
    replayed = start_export(client, bearer(user), key="export-1").json()
    assert (replayed["status"], replayed["progress"]) == ("running", 30)
    # Another key, or another user with the same key, is another job.
    assert start_export(client, bearer(user), key="export-2").json()["id"] != first.json()["id"]
    assert start_export(client, bearer(make_user()), key="export-1").json()["id"] != first.json()["id"]


def test_an_idempotency_key_reused_for_another_export_is_409(client, make_user, bearer):
    user = make_user()
    start_export(client, bearer(user), {"format": "csv"}, key="k")
    response = start_export(client, bearer(user), {"format": "jsonl"}, key="k")
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_key_reused"


def test_an_overlong_idempotency_key_is_a_validation_error(client, make_user, bearer):
    response = start_export(client, bearer(make_user()), key="k" * 256)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert Job.objects.count() == 0


@pytest.mark.parametrize(
    "body",
    [{"format": "xlsx"}, {"scope": "everyone"}, {"format": None}, {"format": "csv", "extra": 1}, [], '"csv"'],
)
def test_invalid_export_requests_are_422_and_start_nothing(client, make_user, bearer, body):
    response = client.post(f"{V1}/exports", body, content_type="application/json", headers=bearer(make_user()))
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert Job.objects.count() == 0


def test_malformed_json_is_400(client, make_user, bearer):
    response = client.post(f"{V1}/exports", b"{", content_type="application/json", headers=bearer(make_user()))
    assert response.status_code == 400


def test_exporting_everything_is_for_staff(client, make_user, bearer):
    response = start_export(client, bearer(make_user()), {"format": "csv", "scope": "all"})
    assert response.status_code == 403
    staff = make_user(is_staff=True)
    assert start_export(client, bearer(staff), {"format": "csv", "scope": "all"}).status_code == 202


def test_jobs_need_a_token(client):
    assert client.post(f"{V1}/exports", {}, content_type="application/json").status_code == 401
    response = client.get(f"{V1}/jobs/1")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


def test_too_many_jobs_in_progress_is_429(client, make_user, bearer, settings):
    settings.JOB_MAX_ACTIVE_PER_USER = 2
    user = make_user()
    assert start_export(client, bearer(user)).status_code == 202
    assert start_export(client, bearer(user)).status_code == 202
    refused = start_export(client, bearer(user))
    assert refused.status_code == 429
    assert refused.json()["code"] == "too_many_jobs"
    assert int(refused["Retry-After"]) > 0
    # A replay of an earlier request is not a new job: it is still answered.
    assert start_export(client, bearer(user), key="k").status_code == 429
    Job.objects.filter(owner=user).update(status=Job.Status.SUCCEEDED, finished_at=timezone.now())
    assert start_export(client, bearer(user)).status_code == 202


# --- reading jobs ----------------------------------------------------------------------------------------


def test_someone_elses_job_is_404_and_its_file_too(client, make_user, bearer):
    owner, other = make_user(), make_user()
    job_id = start_export(client, bearer(owner)).json()["id"]
    for path in (f"{V1}/jobs/{job_id}", f"{V1}/jobs/{job_id}/download"):
        response = client.get(path, headers=bearer(other))
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
    assert client.get(f"{V1}/jobs/{job_id + 1000}", headers=bearer(owner)).status_code == 404


@pytest.mark.parametrize("job_id", ["0", "-1", "abc", "99999999999999999999"])
def test_odd_job_ids_are_422_not_500(client, make_user, bearer, job_id):
    assert client.get(f"{V1}/jobs/{job_id}", headers=bearer(make_user())).status_code in (404, 422)


def test_the_download_is_409_until_the_job_has_succeeded(client, make_user, bearer):
    user = make_user()
    job_id = start_export(client, bearer(user)).json()["id"]
    for status in (Job.Status.QUEUED, Job.Status.RUNNING, Job.Status.FAILED):
        Job.objects.filter(pk=job_id).update(status=status)
        response, _ = download(client, job_id, bearer(user))
        assert response.status_code == 409
        assert response.json()["code"] == "job_not_ready"


def test_the_jobs_endpoints_are_documented_with_their_errors(client):
    paths = client.get(f"{V1}/openapi.json").json()["paths"]
    post = paths[f"{V1}/exports"]["post"]
    assert {"202", "401", "403", "409", "422", "429"} <= set(post["responses"])
    assert any(parameter["name"] == "Idempotency-Key" for parameter in post["parameters"])
    assert {"200", "401", "404", "409"} <= set(paths[f"{V1}/jobs/{{job_id}}/download"]["get"]["responses"])
    v2 = client.get("/api/v2/openapi.json").json()["paths"]
    assert {"/api/v2/exports", "/api/v2/jobs", "/api/v2/jobs/{job_id}", "/api/v2/jobs/{job_id}/download"} <= set(v2)


# --- the export itself (what the task runs) --------------------------------------------------------------


def run(job_id: int) -> Job:
    exports.export_run(job_id=job_id)
    return Job.objects.get(pk=job_id)


def test_a_csv_export_holds_exactly_the_owners_posts_drafts_included(client, make_user, bearer, make_post):
    owner, other = make_user(), make_user()
    mine = [
        make_post(owner, title="=HYPERLINK(1)", body='line one\nline two, "quoted"'),
        make_post(owner, title="Draft", status=PostStatus.DRAFT),
    ]
    make_post(other, title="Not mine")
    job_id = start_export(client, bearer(owner), {"format": "csv", "scope": "mine"}).json()["id"]

    job = run(job_id)
    assert job.status == Job.Status.SUCCEEDED and job.progress == 100 and job.attempts == 1
    assert job.result_rows == 2
    response, content = download(client, job_id, bearer(owner))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="posts-export-{job_id}.csv"'
    assert int(response["Content-Length"]) == len(content)
    rows = list(csv.DictReader(io.StringIO(content.decode())))
    assert [int(row["id"]) for row in rows] == [post.pk for post in mine]
    # A cell a spreadsheet would run as a formula is written as text.
    assert rows[0]["title"] == "'=HYPERLINK(1)"
    assert rows[0]["body"] == 'line one\nline two, "quoted"'
    assert rows[1]["status"] == "draft"
    assert rows[0]["author_username"] == owner.username
    assert rows[0]["created_at"].endswith("Z")

    body = client.get(f"{V1}/jobs/{job_id}", headers=bearer(owner)).json()
    assert body["status"] == "succeeded" and body["progress"] == 100
    assert body["download_url"] == f"{V1}/jobs/{job_id}/download"
    assert body["finished_at"].endswith("Z")


def test_a_jsonl_export_of_everything_keeps_values_exactly(client, make_user, bearer, make_posts):
    staff, author = make_user(is_staff=True), make_user()
    posts = make_posts(author, 30) + make_posts(staff, 5, status=PostStatus.DRAFT)
    Post.objects.filter(pk=posts[0].pk).update(title="-minus stays as is in JSON")
    job_id = start_export(client, bearer(staff), {"format": "jsonl", "scope": "all"}).json()["id"]

    assert run(job_id).result_rows == 35
    response, content = download(client, job_id, bearer(staff))
    assert response["Content-Type"] == "application/x-ndjson; charset=utf-8"
    lines = [orjson.loads(line) for line in content.splitlines()]
    assert sorted(line["id"] for line in lines) == sorted(post.pk for post in posts)
    first = next(line for line in lines if line["id"] == posts[0].pk)
    assert first["title"] == "-minus stays as is in JSON"
    assert set(first) == set(exports.EXPORT_COLUMNS)


def test_an_export_with_nothing_in_scope_is_a_header_only_file(client, make_user, bearer):
    user = make_user()
    job_id = start_export(client, bearer(user)).json()["id"]
    assert run(job_id).result_rows == 0
    assert download(client, job_id, bearer(user))[1].decode().splitlines() == [",".join(exports.EXPORT_COLUMNS)]


def test_running_a_finished_job_again_changes_nothing(client, make_user, bearer, make_post):
    user = make_user()
    make_post(user)
    job_id = start_export(client, bearer(user)).json()["id"]
    first = run(job_id)
    again = run(job_id)
    assert (again.attempts, again.result_file.name, again.finished_at) == (
        first.attempts,
        first.result_file.name,
        first.finished_at,
    )


def test_a_second_run_finishing_after_the_first_discards_its_file(make_user, media_root):
    job = Job.objects.create(owner=make_user(), kind=Job.Kind.EXPORT, params={"format": "csv", "scope": "mine"})
    exports.export_run(job_id=job.pk)
    kept = Job.objects.get(pk=job.pk).result_file.name
    # A redelivered run that was already past its start when the first one succeeded.
    surplus = default_storage.save("exports/surplus.csv", ContentFile(b"id\n"))
    exports._export_succeeded(job.pk, name=surplus, rows=0)
    assert Job.objects.get(pk=job.pk).result_file.name == kept
    assert not default_storage.exists(surplus)
    assert default_storage.exists(kept)


# --- operations ------------------------------------------------------------------------------------------


def test_purge_deletes_jobs_and_files_past_the_retention_only(make_user, settings):
    settings.JOB_RETENTION_SECONDS = 3600
    owner = make_user()
    old, recent = (
        Job.objects.create(owner=owner, kind=Job.Kind.EXPORT, params={"format": "csv", "scope": "mine"})
        for _ in range(2)
    )
    for job in (old, recent):
        exports.export_run(job_id=job.pk)
    Job.objects.filter(pk=old.pk).update(finished_at=timezone.now() - timedelta(hours=2))
    unfinished = Job.objects.create(owner=owner, kind=Job.Kind.EXPORT, params={"format": "csv", "scope": "mine"})
    old_file = Job.objects.get(pk=old.pk).result_file.name

    assert exports.jobs_purge_finished() == 1
    assert set(Job.objects.values_list("pk", flat=True)) == {recent.pk, unfinished.pk}
    assert not default_storage.exists(old_file)
    assert default_storage.exists(Job.objects.get(pk=recent.pk).result_file.name)


def test_purge_of_expired_token_families(make_user, issue_tokens):
    from accounts.models import RefreshTokenFamily
    from accounts.services import token_families_purge_expired

    user = make_user()
    issue_tokens(user)
    issue_tokens(user)
    RefreshTokenFamily.objects.filter(pk=RefreshTokenFamily.objects.first().pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert token_families_purge_expired() == 1
    assert RefreshTokenFamily.objects.filter(user=user).count() == 1


def test_a_failed_job_can_be_retried_from_the_start(make_user):
    job = Job.objects.create(
        owner=make_user(),
        kind=Job.Kind.EXPORT,
        params={"format": "csv", "scope": "mine"},
        status=Job.Status.FAILED,
        error="The export failed.",
        finished_at=timezone.now(),
    )
    assert exports.jobs_retry(job_ids=[job.pk]) == 1
    job.refresh_from_db()
    assert (job.status, job.error, job.finished_at) == (Job.Status.QUEUED, "", None)
    assert exports.jobs_retry(job_ids=[job.pk]) == 0  # only failed jobs


def test_the_beat_schedule_names_real_tasks():
    from django.conf import settings

    from config.celery import app

    app.loader.import_default_modules()
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        assert entry["task"] in app.tasks, entry


def test_a_duplicate_delivery_leaves_a_job_in_hand_elsewhere_alone(make_user, settings):
    settings.JOB_LEASE_SECONDS = 30
    job = Job.objects.create(
        owner=make_user(),
        kind=Job.Kind.EXPORT,
        params={"format": "csv", "scope": "mine"},
        status=Job.Status.RUNNING,
        attempts=1,
        progress=40,
        heartbeat_at=timezone.now(),
    )
    exports.export_run(job_id=job.pk)
    assert Job.objects.values_list("status", "attempts", "progress").get(pk=job.pk) == ("running", 1, 40)

    # Silent for longer than the lease: its worker is gone, and this delivery takes the job over.
    Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=31))
    exports.export_run(job_id=job.pk)
    assert Job.objects.values_list("status", "attempts").get(pk=job.pk) == ("succeeded", 2)


def test_lost_jobs_are_enqueued_again_once_per_wait(make_user, make_job, broker_tasks, settings):
    settings.JOB_REQUEUE_AFTER_SECONDS = 600
    owner = make_user()
    long_ago = timezone.now() - timedelta(seconds=settings.CELERY_VISIBILITY_TIMEOUT + 601)
    lost = make_job(owner, enqueued_at=long_ago)
    abandoned = make_job(owner, status=Job.Status.RUNNING, heartbeat_at=long_ago, enqueued_at=long_ago)
    make_job(owner)  # just enqueued
    make_job(owner, status=Job.Status.RUNNING, heartbeat_at=timezone.now())  # in hand

    assert exports.jobs_requeue_stalled() == 2
    assert sorted(broker_tasks()) == [
        ("posts.tasks.run_export", [lost.pk]),
        ("posts.tasks.run_export", [abandoned.pk]),
    ]
    assert exports.jobs_requeue_stalled() == 0


def test_a_job_whose_message_the_broker_never_took_is_sent_by_the_next_sweep(make_user, make_job, broker_tasks):
    """The job row is the outbox: `enqueued_at` is set only once the broker took the message."""
    owner = make_user()
    never_taken = make_job(owner, enqueued_at=None, created_at=timezone.now() - timedelta(seconds=10))
    make_job(owner, enqueued_at=None)  # its request's commit is sending it right now
    assert exports.jobs_requeue_stalled() == 1
    assert broker_tasks() == [("posts.tasks.run_export", [never_taken.pk])]
    never_taken.refresh_from_db()
    assert never_taken.enqueued_at is not None
    assert exports.jobs_requeue_stalled() == 0


def test_a_running_export_keeps_its_lease_without_reporting_progress(make_user, make_job, settings):
    """A slow step (a count, a large file's upload) reports no progress: the lease is renewed all the same."""
    settings.JOB_LEASE_SECONDS = 0.3
    started = timezone.now() - timedelta(seconds=60)
    job = make_job(make_user(), status=Job.Status.RUNNING, heartbeat_at=started)
    with exports._lease_kept(job.pk):
        time.sleep(0.5)
    renewed = Job.objects.get(pk=job.pk).heartbeat_at
    assert renewed > started + timedelta(seconds=59)
    time.sleep(0.3)
    assert Job.objects.get(pk=job.pk).heartbeat_at == renewed  # and no longer once the export is over
