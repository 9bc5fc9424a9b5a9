"""Prometheus metrics: django-prometheus' request series, plus ours, served at /metrics.

With several server processes (`manage.py serve --workers N`) every process writes its samples to files in
PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode, chosen by that variable at import time) and a
scrape, answered by any one process, adds them all up. /metrics answers only clients inside
METRICS_ALLOWED_NETWORKS that did not come through a proxy, or anyone presenting METRICS_TOKEN as a bearer token.

Labels are bounded: view names and route templates, HTTP methods from a fixed set, status codes, policy names,
failure reasons from a fixed set, registered task names.
"""

import asyncio
import atexit
import hmac
import ipaddress
import os

from django.conf import settings
from django.http import HttpResponse
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
CELERY_TASK_DURATION = Histogram("celery_task_duration_seconds", "Celery task run time", ["task"])

_http = Metrics.get_instance()
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# django-prometheus' label for requests that resolved to no view (unknown paths), kept for dashboard compatibility.
_UNRESOLVED_VIEW = "<unnamed view>"


def observe_request(request, response, duration_seconds: float) -> None:
    """Record one HTTP request in django-prometheus' series (same names, same labels), from our async middleware
    instead of its sync one, which would cost every request two thread hops."""
    method = request.method if request.method in _KNOWN_METHODS else "other"
    match = getattr(request, "resolver_match", None)
    view = match.view_name if match is not None and match.view_name else _UNRESOLVED_VIEW
    transport = "https" if request.is_secure() else "http"
    status = str(response.status_code)
    _http.requests_by_method.labels(method).inc()
    _http.requests_by_transport.labels(transport).inc()
    _http.requests_by_view_transport_method.labels(view, transport, method).inc()
    _http.responses_by_status.labels(status).inc()
    _http.responses_by_status_view_method.labels(status, view, method).inc()
    _http.requests_latency_by_view_method.labels(view, method).observe(duration_seconds)


def forget_process_on_exit() -> None:
    """In multiprocess mode, drop this process' live gauges (open connections) when it exits."""
    if _MULTIPROCESS_DIR:
        atexit.register(multiprocess.mark_process_dead, os.getpid())


def collect_registry() -> CollectorRegistry:
    """What a scrape reads: every process' sample files in multiprocess mode, this process' metrics otherwise."""
    if _MULTIPROCESS_DIR:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
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
