"""Our metrics, recorded in this process and read back the way Prometheus reads them: a scrape of /metrics parsed by
prometheus_client's text parser. Database and cache series, rate-limited requests by policy, Celery outcomes, and the
clean-up of the multiprocess directory. (Across real server processes and a real worker: tests/test_observability.py.)
"""

import os
import subprocess

import pytest
from asgiref.sync import sync_to_async
from celery import shared_task
from django.core.cache import cache
from django.db import ProgrammingError, connection
from django.test.utils import CaptureQueriesContext
from django_prometheus.cache.backends.redis import RedisCache
from prometheus_client.parser import text_string_to_metric_families

from accounts.models import User
from core import metrics_dir

pytestmark = pytest.mark.django_db(transaction=True)

DB = {"alias": "default", "vendor": "postgresql"}
REDIS = {"backend": "redis"}
CLOSED_REDIS_PORT_URL = "redis://127.0.0.1:1/0"


def parse(response) -> dict[tuple[str, tuple], float]:
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def scrape(client) -> dict[tuple[str, tuple], float]:
    return parse(client.get("/metrics"))


async def ascrape(async_client) -> dict[tuple[str, tuple], float]:
    return parse(await async_client.get("/metrics"))


def delta(before: dict, after: dict, name: str, **labels) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


# --- database -----------------------------------------------------------------------------------------------


def test_every_statement_is_counted_and_timed(client):
    # The next query connects again (a checkout from the pool): a connection is instrumented when it connects.
    connection.close()
    before = scrape(client)
    with CaptureQueriesContext(connection) as writes:
        User.objects.create_user(username="counted", password="a long enough password")
        assert User.objects.filter(username="counted").count() == 1
    # Counted now: a request resets the connection's query log the context reads from.
    written = len(writes)
    # A request in between closes the connection and the next query reconnects: the wrapper is neither lost
    # nor installed twice.
    scrape(client)
    with CaptureQueriesContext(connection) as reads:
        assert len(User.objects.all()) == 1
    read = len(reads)
    after = scrape(client)
    assert written >= 2 and read == 1
    statements = written + read
    assert delta(before, after, "django_db_execute_total", **DB) == statements
    assert delta(before, after, "django_db_query_duration_seconds_count", **DB) == statements
    assert delta(before, after, "django_db_query_duration_seconds_sum", **DB) > 0
    # Buckets fine enough for queries (PROMETHEUS_LATENCY_BUCKETS), not django-prometheus' default 10 ms floor.
    assert ("django_db_query_duration_seconds_bucket", tuple(sorted({**DB, "le": "0.001"}.items()))) in after


async def test_async_orm_queries_are_counted(async_client):
    before = await ascrape(async_client)
    assert await User.objects.acount() == 0
    assert await User.objects.filter(username="nobody").afirst() is None
    after = await ascrape(async_client)
    # The async ORM's thread keeps its connection until closed (a request would close it when it finishes).
    await sync_to_async(lambda: connection.close())()
    assert delta(before, after, "django_db_execute_total", **DB) == 2


def test_executemany_counts_every_parameter_set_and_failures_by_type(client):
    before = scrape(client)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE metered (n integer)")
        cursor.executemany("INSERT INTO metered (n) VALUES (%s)", [(1,), (2,), (3,)])
        with pytest.raises(ProgrammingError):
            cursor.execute("SELECT * FROM no_such_table_anywhere")
    after = scrape(client)
    assert delta(before, after, "django_db_execute_total", **DB) == 1 + 3 + 1
    assert delta(before, after, "django_db_execute_many_total", **DB) == 3
    assert delta(before, after, "django_db_errors_total", **DB, type="ProgrammingError") == 1


def test_a_callers_execute_wrapper_does_not_remove_ours(client):
    connection.close()
    seen = []

    def spy(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    # The connection is made inside the caller's block: ours must survive the caller's pop at the end.
    with connection.execute_wrapper(spy):
        User.objects.exists()
    before = scrape(client)
    User.objects.exists()
    after = scrape(client)
    assert len(seen) == 1
    assert delta(before, after, "django_db_execute_total", **DB) == 1


# --- cache --------------------------------------------------------------------------------------------------


async def test_cache_gets_are_counted_as_hits_and_misses(async_client):
    before = await ascrape(async_client)
    assert await cache.aget("metrics:absent") is None
    await cache.aset("metrics:present", {"a": 1}, 60)
    assert await cache.aget("metrics:present") == {"a": 1}
    assert cache.get("metrics:present") == {"a": 1}
    after = await ascrape(async_client)
    assert delta(before, after, "django_cache_get_total", **REDIS) == 3
    assert delta(before, after, "django_cache_get_hits_total", **REDIS) == 2
    assert delta(before, after, "django_cache_get_misses_total", **REDIS) == 1


def test_cache_get_failures_are_counted(client):
    unreachable = RedisCache(
        CLOSED_REDIS_PORT_URL, {"OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1}, "KEY_PREFIX": "x"}
    )
    before = scrape(client)
    with pytest.raises(Exception, match="(?i)connect"):
        unreachable.get("anything")
    after = scrape(client)
    assert delta(before, after, "django_cache_get_fail_total", **REDIS) == 1


# --- rate limiting --------------------------------------------------------------------------------------------


def test_refused_requests_are_counted_by_policy(client, settings):
    settings.RATE_LIMIT_POLICIES = {
        **settings.RATE_LIMIT_POLICIES,
        "read": {"algorithm": "sliding_window", "limit": 2, "window": 60},
        "auth": {"algorithm": "sliding_window", "limit": 1, "window": 60, "fail_closed": True},
    }
    before = scrape(client)
    assert [client.get("/api/v1/users/1").status_code for _ in range(4)] == [404, 404, 429, 429]
    garbage = {"refresh_token": "not.a.token"}
    refresh = [client.post("/api/v1/auth/refresh", garbage, content_type="application/json") for _ in range(2)]
    assert [response.status_code for response in refresh] == [401, 429]
    after = scrape(client)
    assert delta(before, after, "ratelimit_limited_total", policy="read") == 2
    assert delta(before, after, "ratelimit_limited_total", policy="auth") == 1
    assert delta(before, after, "ratelimit_limited_total", policy="write") == 0


# --- Celery -------------------------------------------------------------------------------------------------


@shared_task(name="tests.core.test_metrics.succeeds")
def succeeds() -> int:
    return 1


@shared_task(name="tests.core.test_metrics.fails")
def fails() -> None:
    raise RuntimeError("the task failed")


def test_task_outcomes_and_durations_are_counted_by_task(client):
    # apply() runs the task here, through the signals a worker sends around every task (throw=False: a worker
    # records a failure, it does not propagate it).
    before = scrape(client)
    succeeds.apply()
    succeeds.apply()
    assert fails.apply(throw=False).state == "FAILURE"
    after = scrape(client)
    ok, failed = "tests.core.test_metrics.succeeds", "tests.core.test_metrics.fails"
    assert delta(before, after, "celery_tasks_total", task=ok, outcome="success") == 2
    assert delta(before, after, "celery_tasks_total", task=failed, outcome="failure") == 1
    assert delta(before, after, "celery_tasks_total", task=failed, outcome="success") == 0
    assert delta(before, after, "celery_task_duration_seconds_count", task=ok) == 2
    assert delta(before, after, "celery_task_duration_seconds_count", task=failed) == 1
    # Buckets up to the soft time limit: an export's duration is not just "over 10 s".
    assert delta(before, after, "celery_task_duration_seconds_bucket", task=ok, le="900.0") == 2


# --- the multiprocess directory -------------------------------------------------------------------------------


@pytest.fixture
def metrics_directory(tmp_path, monkeypatch):
    directory = tmp_path / "prometheus"
    directory.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    return directory


def test_startup_clears_every_file_but_those_this_process_writes(metrics_directory):
    own_pid = os.getpid()
    earlier_run = ["counter_4242.db", "gauge_livesum_4242.db", "histogram_17.db"]
    # A file named with this process' pid, left by an earlier process that had the same pid (a restarted
    # container's pid 1), and one this process really has open.
    reused_pid = f"gauge_livesum_{own_pid}.db"
    written_here = f"counter_{own_pid}.db"
    for name in [*earlier_run, reused_pid, written_here]:
        (metrics_directory / name).write_bytes(b"\0" * 16)
    with open(metrics_directory / written_here, "a+b"):
        removed = metrics_dir.clear_stale_files()
    assert removed == sorted([*earlier_run, reused_pid])
    assert [path.name for path in metrics_directory.iterdir()] == [written_here]


def test_a_dead_process_live_gauges_are_dropped_and_its_counters_kept(metrics_directory):
    dead_pid = _pid_of_an_exited_process()
    for name in [f"gauge_livesum_{dead_pid}.db", f"counter_{dead_pid}.db", f"gauge_livesum_{os.getpid()}.db"]:
        (metrics_directory / name).write_bytes(b"\0" * 16)
    metrics_dir.forget_dead_processes()
    assert sorted(path.name for path in metrics_directory.iterdir()) == sorted(
        [f"counter_{dead_pid}.db", f"gauge_livesum_{os.getpid()}.db"]
    )


def _pid_of_an_exited_process() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid
