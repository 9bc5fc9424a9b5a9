"""OpenTelemetry tracing: one provider per process, the exporter chosen by the standard OTEL_* variables.

`setup_tracing()` is called once per process by the web server (config/asgi.py) and the Celery worker
(config/celery.py). Tracing is on when an exporter is configured: OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, or OTEL_TRACES_EXPORTER=console for local development. Otherwise
nothing is instrumented at all, so an untraced deployment pays nothing on the request path.

Spans come from the ASGI middleware (one server span per HTTP request, named by route in core/middleware.py),
psycopg (one span per SQL statement), redis-py (every command, sync and asyncio) and Celery (publish in the web
process, run in the worker, with the trace context carried in the task's headers). Our own spans (`span()`)
cover service calls worth seeing on their own; their attributes are ids and outcomes, never secrets or text.
"""

import contextlib
import os
from collections.abc import Iterator

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler
from opentelemetry.trace import SpanKind

DEFAULT_SERVICE_NAME = "backend"
# Probes and scrapes arrive every few seconds and say nothing about user traffic.
_UNTRACED_URLS = "/health$,/ready$,/metrics$"

tracer = trace.get_tracer("backend")
_provider: TracerProvider | None = None


class _NoOrphanClientSpans(Sampler):
    """Samples every trace except one that would start with a client call (a Redis or SQL command issued outside
    any request or task: channel-layer polls, presence heartbeats). Each of those would be a one-span trace."""

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None, trace_state=None):
        sampler = ALWAYS_OFF if kind == SpanKind.CLIENT else ALWAYS_ON
        return sampler.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return "NoOrphanClientSpans"


def _exporter_from_environment() -> SpanExporter | None:
    chosen = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if chosen == "none" or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    if chosen == "console":
        return ConsoleSpanExporter()
    endpoint_set = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    if chosen == "otlp" or endpoint_set:
        # Imported only when used: the exporter pulls in protobuf and requests.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    return None


def setup_tracing(role: str, *, force: bool = False) -> TracerProvider | None:
    """Install the tracer provider and the instrumentations, once per process. `role` (web, worker) becomes a
    resource attribute. Returns the provider, or None when no exporter is configured (and `force` is not set:
    the test suite forces it and adds an in-memory exporter of its own)."""
    global _provider
    if _provider is not None:
        return _provider
    exporter = _exporter_from_environment()
    if exporter is None and not force:
        return None
    attributes = {"service.role": role}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = DEFAULT_SERVICE_NAME
    # Resource.create also reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
    provider = TracerProvider(resource=Resource.create(attributes), sampler=ParentBased(root=_NoOrphanClientSpans()))
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _instrument_libraries()
    _provider = provider
    return provider


def tracing_enabled() -> bool:
    return _provider is not None


def _instrument_libraries() -> None:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    _instrument_psycopg()
    RedisInstrumentor().instrument()
    CeleryInstrumentor().instrument()


def _instrument_psycopg() -> None:
    """Spans for every statement psycopg 3 runs, built on the DB-API instrumentation the way
    opentelemetry-instrumentation-psycopg does it (that package has no release matching our instrumentation
    version). Django's backend and its pool connect through `Connection.connect(..., cursor_factory=...)`: the
    connection gets a traced subclass of the cursor class it asked for."""
    import psycopg
    from opentelemetry.instrumentation import dbapi

    class PsycopgIntegration(dbapi.DatabaseApiIntegration):
        def wrapped_connection(self, connect_method, args, kwargs):
            base = kwargs.get("cursor_factory") or psycopg.Cursor
            cursor_tracer = dbapi.CursorTracer(self)

            class TracedCursor(base):
                def execute(self, *args, **kwargs):
                    return cursor_tracer.traced_execution(self, super().execute, *args, **kwargs)

                def executemany(self, *args, **kwargs):
                    return cursor_tracer.traced_execution(self, super().executemany, *args, **kwargs)

            kwargs["cursor_factory"] = TracedCursor
            connection = connect_method(*args, **kwargs)
            self.get_connection_attributes(connection)
            return connection

    # Statements carry placeholders only: parameters (which may be secrets) are never captured.
    dbapi.wrap_connect(
        __name__,
        psycopg.Connection,
        "connect",
        "postgresql",
        {"database": "info.dbname", "port": "info.port", "host": "info.host", "user": "info.user"},
        db_api_integration_factory=PsycopgIntegration,
    )


def traced_asgi(app):
    """The HTTP application wrapped in the ASGI instrumentation (a server span per request, the incoming
    `traceparent` honoured) when tracing is on; the application itself otherwise."""
    if not tracing_enabled():
        return app
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    # Per-message "receive"/"send" spans would double the span count of every request for no insight.
    return OpenTelemetryMiddleware(app, excluded_urls=_UNTRACED_URLS, exclude_spans=["receive", "send"])


def name_request_span(method: str, route: str) -> None:
    """Name the current server span by route template (bounded cardinality), once the URL is resolved."""
    current = trace.get_current_span()
    if current.is_recording():
        current.update_name(f"{method} {route}")
        current.set_attribute("http.route", route)


@contextlib.contextmanager
def span(name: str, **attributes) -> Iterator[trace.Span]:
    """A span of our own around a service call; attributes must be ids, counts and outcomes only."""
    with tracer.start_as_current_span(name, attributes=attributes) as current:
        yield current


def context_from_headers(headers: list[tuple[bytes, bytes]]) -> otel_context.Context:
    """The trace context a client sent (`traceparent`) in ASGI headers, e.g. on a WebSocket handshake."""
    carrier = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in headers}
    return propagate.extract(carrier)
