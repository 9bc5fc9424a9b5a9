"""Prometheus metrics: django-prometheus' request, database and cache series, plus ours, served at /metrics.

With several server processes (`manage.py serve --workers N`) every process writes its samples to files in
PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode, chosen by that variable at import time) and a
scrape, answered by any one process, adds them all up (core/metrics_dir.py keeps that directory clean). /metrics
answers only clients inside METRICS_ALLOWED_NETWORKS that did not come through a proxy, or anyone presenting
METRICS_TOKEN as a bearer token.

Database series are django-prometheus' (`django_db_execute_total`, `django_db_query_duration_seconds`,
`django_db_errors_total`, by alias and vendor), recorded by an execute wrapper every database connection gets when
it connects, rather than by django-prometheus' database backends: it works the same on Django's psycopg pool,
SQLite and the async ORM (whose queries run through the same sync cursors), with no engine of its own in settings.
Cache series (`django_cache_get_total`, hits, misses, failures) come from django-prometheus' Redis cache backend.

Labels are bounded: view names and route templates, HTTP methods from a fixed set, status codes, policy names,
failure reasons from a fixed set, registered task names.
"""

import asyncio
import atexit
import hmac
import ipaddress
import os
import time

from django.conf import settings
from django.db.backends.signals import connection_created
from django.http import HttpResponse
from django_prometheus.db.metrics import errors_total, execute_many_total, execute_total, query_duration_seconds
from django_prometheus.middleware import Metrics
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from core.metrics_dir import forget_dead_processes

_MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR")

WEBSOCKET_CONNECTIONS = Gauge(
    "websocket_connections_open",
    "WebSocket connections open now",
    ["consumer"],
    # Summed over live processes only: a dead process' connections are gone with it.
    multiprocess_mode="livesum",
)
CHAT_MESSAGES_SENT = Counter("chat_messages_sent_total", "Chat messages stored and broadcast")
RATE_LIMITED = Counter("ratelimit_limited_total", "Requests refused with 429 by the rate limiter", ["policy"])
AUTH_FAILURES = Counter("auth_failures_total", "Refused credentials and tokens", ["reason"])
CELERY_TASKS = Counter("celery_tasks_total", "Celery tasks finished, by outcome", ["task", "outcome"])
CELERY_TASK_DURATION = Histogram(
    "celery_task_duration_seconds",
    "Celery task run time",
    ["task"],
    # From a quick e-mail to an export that runs up to the soft time limit (15 minutes by default).
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 900, 1800, float("inf")),
)

_http = Metrics.get_instance()
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# django-prometheus' label for requests that resolved to no view (unknown paths), kept for dashboard compatibility.
_UNRESOLVED_VIEW = "<unnamed view>"


# The labelled series one kind of request counts in, by (view, method, transport, status): `labels()` validates
# and looks up its values under a lock every time, six times per request otherwise. As bounded as the labels are.
_request_series: dict[tuple, tuple] = {}


def observe_request(request, response, duration_seconds: float) -> None:
    """Record one HTTP request in django-prometheus' series (same names, same labels), from our async middleware
    instead of its sync one, which would cost every request two thread hops."""
    method = request.method if request.method in _KNOWN_METHODS else "other"
    match = getattr(request, "resolver_match", None)
    view = match.view_name if match is not None and match.view_name else _UNRESOLVED_VIEW
    transport = "https" if request.is_secure() else "http"
    key = (view, method, transport, response.status_code)
    series = _request_series.get(key)
    if series is None:
        status = str(response.status_code)
        counters = (
            _http.requests_by_method.labels(method),
            _http.requests_by_transport.labels(transport),
            _http.requests_by_view_transport_method.labels(view, transport, method),
            _http.responses_by_status.labels(status),
            _http.responses_by_status_view_method.labels(status, view, method),
        )
        series = _request_series[key] = (counters, _http.requests_latency_by_view_method.labels(view, method))
    counters, latency = series
    for counter in counters:
        counter.inc()
    latency.observe(duration_seconds)


def _observe_query(execute, sql, params, many, context):
    """Count and time one statement (an `executemany` counts each parameter set, as django-prometheus does)."""
    connection = context["connection"]
    alias, vendor = connection.alias, connection.vendor
    statements = 1
    if many:
        # A generator of parameter sets cannot be counted without consuming it: it counts as one.
        statements = len(params) if hasattr(params, "__len__") else 1
        execute_many_total.labels(alias, vendor).inc(statements)
    execute_total.labels(alias, vendor).inc(statements)
    started = time.perf_counter()
    try:
        return execute(sql, params, many, context)
    except Exception as exc:
        # Django's own error classes (ProgrammingError, IntegrityError, ...): a small, fixed set of labels.
        errors_total.labels(alias, vendor, type(exc).__name__).inc()
        raise
    finally:
        query_duration_seconds.labels(alias, vendor).observe(time.perf_counter() - started)


def _observe_connection(sender, connection, **kwargs) -> None:
    # Sent on every connect, including each checkout from the pool: install once per connection object. First in
    # line, so that a caller's `with connection.execute_wrapper(...)`, which pops the last wrapper, pops its own.
    if _observe_query not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, _observe_query)


connection_created.connect(_observe_connection, dispatch_uid="core.metrics.observe_connection")


def forget_process_on_exit() -> None:
    """In multiprocess mode, drop this process' live gauges (open connections) when it exits."""
    if _MULTIPROCESS_DIR:
        atexit.register(multiprocess.mark_process_dead, os.getpid())


class _LiveProcessesCollector(multiprocess.MultiProcessCollector):
    """Every process' sample files, once the live gauges of processes that died without their exit hook (killed,
    out of memory) are dropped: a server restarts a dead worker, and its connections must not count for ever."""

    def collect(self):
        forget_dead_processes()
        return super().collect()


def collect_registry() -> CollectorRegistry:
    """What a scrape reads: every process' sample files in multiprocess mode, this process' metrics otherwise."""
    if _MULTIPROCESS_DIR:
        registry = CollectorRegistry()
        _LiveProcessesCollector(registry)
        return registry
    return REGISTRY


def _allowed(request) -> bool:
    token = settings.METRICS_TOKEN
    if token:
        presented = request.headers.get("Authorization", "")
        if hmac.compare_digest(presented.encode(), f"Bearer {token}".encode()):
            return True
    # Through a proxy (the public ingress) the peer address is the proxy's, however private it looks.
    if "X-Forwarded-For" in request.headers or "Forwarded" in request.headers:
        return False
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in network for network in settings.METRICS_ALLOWED_NETWORKS)


async def metrics_view(request):
    if not _allowed(request):
        return HttpResponse("Forbidden\n", status=403, content_type="text/plain")
    # Reading every process' sample files is file I/O: off the event loop.
    body = await asyncio.to_thread(generate_latest, collect_registry())
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
