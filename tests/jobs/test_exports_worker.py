"""Exports end to end: a real server process takes the request, a real Celery worker writes the file on the same
PostgreSQL and Redis, the owner watches the job's progress over HTTP and hears it end on /ws/notifications/.

A worker killed with SIGKILL mid-export loses nothing: its unacknowledged message goes to the next worker once the
visibility timeout has passed, and the job completes once, with a complete file."""

import asyncio
import csv
import io
import json
import os
import signal
import time
import urllib.request

import pytest
from django.db import connections

from jobs import services
from jobs.models import Job
from posts.models import Post, PostStatus
from tests.conftest import child_process_env
from tests.helpers import WorkerProcess, http_json, open_websocket

pytestmark = pytest.mark.django_db(transaction=True)

OWN_POSTS = 3000
OWN_DRAFTS = 200
# Few rows per round trip, so that an export of a few thousand rows lasts long enough to watch (and to kill).
SLOW_EXPORT = {"EXPORT_CHUNK_ROWS": "5"}
# Short limits so that a killed worker's message is handed on within seconds rather than the production minutes.
FAST_REDELIVERY = {
    "CELERY_TASK_SOFT_TIME_LIMIT": "12",
    "CELERY_TASK_TIME_LIMIT": "13",
    "CELERY_VISIBILITY_TIMEOUT": "14",
    "JOB_LEASE_SECONDS": "3",
}
DEADLINE_SECONDS = 60


@pytest.fixture
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def child_process_overrides(media_root):
    # Server and workers share the media volume, as web and worker pods do.
    return {"DJANGO_MEDIA_ROOT": str(media_root), **SLOW_EXPORT, **FAST_REDELIVERY}


@pytest.fixture
def owner_posts(make_user, make_posts, issue_tokens):
    """The owner (with posts and drafts) and another user, each with an access token."""
    owner, other = make_user("owner"), make_user("other")
    make_posts(owner, OWN_POSTS)
    make_posts(owner, OWN_DRAFTS, status=PostStatus.DRAFT)
    make_posts(other, 50)
    return (owner, issue_tokens(owner).access_token), (other, issue_tokens(other).access_token)


async def in_db(function, *args, **kwargs):
    """Run a database function in a worker thread that then closes its connection: a connection left open in a
    thread would keep the test database from being dropped at the end of the run."""

    def run():
        try:
            return function(*args, **kwargs)
        finally:
            connections.close_all()

    return await asyncio.to_thread(run)


def expected_ids(owner) -> list[int]:
    return list(Post.objects.filter(author=owner).order_by("id").values_list("id", flat=True))


def fetch(url: str, token: str) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


async def notification_socket(server, token: str):
    socket = await open_websocket(server, token, "/ws/notifications/")
    assert json.loads(await asyncio.wait_for(socket.recv(), 10))["type"] == "welcome"
    return socket


async def job_events(socket, *, within: float) -> list[dict]:
    """Every job event the socket receives within the window."""
    events = []
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        try:
            frame = json.loads(await asyncio.wait_for(socket.recv(), left))
        except TimeoutError:
            break
        if frame["type"] == "job":
            events.append(frame["job"])
    return events


async def test_an_export_goes_queued_running_succeeded_and_its_owner_hears_of_it(
    configured_live_server_process, celery_worker_process, owner_posts
):
    server = configured_live_server_process
    (owner, token), (_, other_token) = owner_posts
    socket = await notification_socket(server, token)

    status, job = await asyncio.to_thread(
        http_json,
        f"{server.base_url}/api/v1/exports",
        method="POST",
        body={"format": "csv", "scope": "mine"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert status == 202, job
    seen = [(job["status"], job["progress"])]
    deadline = time.monotonic() + DEADLINE_SECONDS
    while job["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, f"export still {job}; worker log:\n{celery_worker_process.log()}"
        await asyncio.sleep(0.02)
        _, job = await asyncio.to_thread(
            http_json, f"{server.base_url}/api/v1/jobs/{job['id']}", headers={"Authorization": f"Bearer {token}"}
        )
        if (job["status"], job["progress"]) != seen[-1]:
            seen.append((job["status"], job["progress"]))

    assert seen[0] == ("queued", 0)
    assert seen[-1] == ("succeeded", 100), seen
    assert any(state == "running" and 0 < progress < 100 for state, progress in seen), seen
    progress_seen = [progress for _, progress in seen]
    assert progress_seen == sorted(progress_seen)  # never goes backwards

    content = await asyncio.to_thread(fetch, f"{server.base_url}{job['download_url']}", token)
    rows = list(csv.DictReader(io.StringIO(content.decode())))
    assert [int(row["id"]) for row in rows] == await in_db(expected_ids, owner)
    assert len(rows) == OWN_POSTS + OWN_DRAFTS

    events = await job_events(socket, within=3)
    await socket.close()
    assert [(event["id"], event["status"], event["progress"]) for event in events] == [(job["id"], "succeeded", 100)]
    # The socket names the current version's URL; the job was read through v1.
    assert events[0]["download_url"] == job["download_url"].replace("/api/v1/", "/api/v2/")

    for path in (f"/api/v1/jobs/{job['id']}", job["download_url"]):
        status, body = await asyncio.to_thread(
            http_json, f"{server.base_url}{path}", headers={"Authorization": f"Bearer {other_token}"}
        )
        assert (status, body["code"]) == (404, "not_found")


def wait_for_job(job_id: int, predicate, *, what: str, worker=None) -> Job:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        job = Job.objects.get(pk=job_id)
        if predicate(job):
            return job
        assert time.monotonic() < deadline, f"job never {what}: {job.status} {job.progress}\n{worker and worker.log()}"
        time.sleep(0.01)


async def test_a_worker_killed_mid_export_loses_nothing(
    configured_live_server_process, owner_posts, media_root, tmp_path
):
    server = configured_live_server_process
    (owner, token), _ = owner_posts
    socket = await notification_socket(server, token)
    env = child_process_env(**{"DJANGO_MEDIA_ROOT": str(media_root), **SLOW_EXPORT, **FAST_REDELIVERY})

    first = await asyncio.to_thread(WorkerProcess, env, tmp_path / "worker-1.log")
    try:
        status, job = await asyncio.to_thread(
            http_json,
            f"{server.base_url}/api/v1/exports",
            method="POST",
            body={"format": "jsonl"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert status == 202, job
        midway = await in_db(
            wait_for_job,
            job["id"],
            lambda job: job.status == Job.Status.RUNNING and job.progress > 0,
            what="got under way",
            worker=first,
        )
        os.kill(first.process.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        first.process.wait(timeout=10)
    finally:
        first.stop()

    assert midway.progress < 100
    stranded = await in_db(Job.objects.get, pk=job["id"])
    assert (stranded.status, stranded.attempts, stranded.result_file.name) == (Job.Status.RUNNING, 1, "")
    assert not list(media_root.rglob("*.jsonl"))

    # The message is redelivered once the visibility timeout has passed since its delivery; a worker starting
    # after that takes it back at once.
    await asyncio.sleep(
        max(0.0, int(FAST_REDELIVERY["CELERY_VISIBILITY_TIMEOUT"]) + 1 - (time.monotonic() - killed_at))
    )
    second = await asyncio.to_thread(WorkerProcess, env, tmp_path / "worker-2.log")
    try:
        done = await in_db(wait_for_job, job["id"], lambda job: job.is_finished, what="finished", worker=second)
    finally:
        second.stop()

    assert (done.status, done.progress, done.attempts) == (Job.Status.SUCCEEDED, 100, 2)
    files = list(media_root.rglob("*.jsonl"))
    assert [path.name for path in files] == [os.path.basename(done.result_file.name)]
    lines = [json.loads(line) for line in files[0].read_text().splitlines()]
    assert [line["id"] for line in lines] == await in_db(expected_ids, owner)

    events = await job_events(socket, within=3)
    await socket.close()
    assert [(event["id"], event["status"]) for event in events] == [(job["id"], "succeeded")]


# The production visibility timeout (the broker hands a dead worker's message on only after it), and a short lease.
SLOW_REDELIVERY = {"CELERY_VISIBILITY_TIMEOUT": "1200", "JOB_LEASE_SECONDS": "3"}


async def test_a_dead_workers_job_is_resumed_by_the_sweep_once_its_lease_has_passed(
    configured_live_server_process, owner_posts, media_root, tmp_path, settings
):
    """Without waiting for the visibility timeout (20 minutes by default): the sweep (beat, every
    JOB_SWEEP_SECONDS) sees the lease pass and sends the job again; it completes once, one file, one event."""
    settings.JOB_LEASE_SECONDS = int(SLOW_REDELIVERY["JOB_LEASE_SECONDS"])
    server = configured_live_server_process
    (owner, token), _ = owner_posts
    socket = await notification_socket(server, token)
    env = child_process_env(**{"DJANGO_MEDIA_ROOT": str(media_root), **SLOW_EXPORT, **SLOW_REDELIVERY})

    first = await asyncio.to_thread(WorkerProcess, env, tmp_path / "worker-1.log")
    second = None
    try:
        status, job = await asyncio.to_thread(
            http_json,
            f"{server.base_url}/api/v2/exports",
            method="POST",
            body={"format": "csv"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert status == 202, job
        await in_db(
            wait_for_job, job["id"], lambda job: job.status == "running" and job.progress > 0, what="under way"
        )
        os.kill(first.process.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        first.process.wait(timeout=10)
        second = await asyncio.to_thread(WorkerProcess, env, tmp_path / "worker-2.log")

        # Within the lease the job is in hand as far as anyone knows: the sweep leaves it alone.
        assert await in_db(services.jobs_requeue_stalled) == 0
        requeued = 0
        while not requeued:
            assert time.monotonic() - killed_at < 60, "the sweep never took the job back"
            await asyncio.sleep(1)  # the sweep's beat, sped up
            requeued = await in_db(services.jobs_requeue_stalled)
        resumed_after = time.monotonic() - killed_at
        done = await in_db(wait_for_job, job["id"], lambda job: job.is_finished, what="finished", worker=second)
    finally:
        first.stop()
        if second is not None:
            second.stop()

    assert requeued == 1
    assert resumed_after < settings.JOB_LEASE_SECONDS + 2
    assert (done.status, done.attempts) == (Job.Status.SUCCEEDED, 2)
    files = list(media_root.rglob("*.csv"))
    assert [path.name for path in files] == [os.path.basename(done.result_file.name)]
    rows = list(csv.DictReader(io.StringIO(files[0].read_text())))
    assert [int(row["id"]) for row in rows] == await in_db(expected_ids, owner)
    events = await job_events(socket, within=3)
    await socket.close()
    assert [(event["id"], event["status"]) for event in events] == [(job["id"], "succeeded")]
