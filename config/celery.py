"""The Celery application; its settings are the CELERY_* names in config/settings.py.

Workers log through the project's LOGGING (JSON lines with request, trace and span ids), are traced when an
OTEL exporter is configured (core/tracing.py), count task outcomes and durations, and serve those metrics on
WORKER_METRICS_PORT. A task carries the request id of the request that enqueued it in its headers.
"""

import logging
import os
import time

from celery import Celery
from celery.signals import (
    beat_init,
    before_task_publish,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_init,
    worker_ready,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

_REQUEST_ID_HEADER = "x_request_id"
# task id -> (started, request id token): what task_postrun needs to close what task_prerun opened.
_running: dict[str, tuple[float, object]] = {}


@setup_logging.connect
def _use_project_logging(**kwargs) -> None:
    # Connected, this signal stops Celery from installing its own plain-text handlers.
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


@worker_init.connect
def _observe_worker(sender=None, **kwargs) -> None:
    from celery.concurrency import get_implementation
    from celery.concurrency.prefork import TaskPool as PreforkPool
    from django.conf import settings
    from prometheus_client import start_http_server

    from core.metrics_dir import clear_stale_files, multiprocess_dir

    # Before the pool forks, and before core.metrics opens this process' sample files where it has not yet.
    clear_stale_files()
    pool = get_implementation(getattr(sender, "pool_cls", "solo"))
    if settings.WORKER_METRICS_PORT and multiprocess_dir() is None and issubclass(pool, PreforkPool):
        # Tasks run (and are counted) in the forked pool processes; this process alone serves the port.
        logging.getLogger(__name__).error(
            "WORKER_METRICS_PORT is set but PROMETHEUS_MULTIPROC_DIR is not: a prefork pool's task metrics "
            "will not be served (README, Observability)"
        )

    from core.metrics import collect_registry, forget_process_on_exit
    from core.tracing import setup_tracing

    # Before the pool forks: the span processor restarts its export thread in each child by itself.
    setup_tracing("worker")
    forget_process_on_exit()
    if settings.WORKER_METRICS_PORT:
        start_http_server(settings.WORKER_METRICS_PORT, settings.WORKER_METRICS_HOST, registry=collect_registry())


@beat_init.connect
def _prepare_beat(**kwargs) -> None:
    from pathlib import Path

    from django.conf import settings

    # Beat remembers when each entry last ran in this file; its directory is the writable data volume.
    Path(settings.CELERY_BEAT_SCHEDULE_FILENAME).parent.mkdir(parents=True, exist_ok=True)


@worker_ready.connect
def _log_backends(**kwargs) -> None:
    from core.backends import log_backends_in_use

    log_backends_in_use("celery worker")


@before_task_publish.connect
def _carry_request_id(headers=None, **kwargs) -> None:
    from core.logging import request_id_var

    request_id = request_id_var.get()
    if headers is not None and request_id != "-":
        headers[_REQUEST_ID_HEADER] = request_id


@task_prerun.connect
def _task_started(task_id=None, task=None, **kwargs) -> None:
    from core.logging import request_id_var

    request_id = getattr(task.request, _REQUEST_ID_HEADER, None) or f"task-{task_id}"
    _running[task_id] = (time.perf_counter(), request_id_var.set(request_id))


@task_postrun.connect
def _task_finished(task_id=None, task=None, state=None, **kwargs) -> None:
    from core.logging import request_id_var
    from core.metrics import CELERY_TASK_DURATION, CELERY_TASKS

    started, token = _running.pop(task_id, (None, None))
    if token is not None:
        request_id_var.reset(token)
    CELERY_TASKS.labels(task.name, (state or "unknown").lower()).inc()
    if started is not None:
        CELERY_TASK_DURATION.labels(task.name).observe(time.perf_counter() - started)
