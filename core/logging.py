"""Log records as one JSON object per line, carrying the ids of the request, trace, span and user they belong to."""

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime

import orjson
from opentelemetry import trace

# Set by the request middleware for the duration of one request; copied into threads by asgiref.
request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
# The authenticated user's id, once authentication (or a WebSocket consumer) has established it.
user_id_var: ContextVar[int | None] = ContextVar("user_id", default=None)

# Attributes every LogRecord has; anything else on a record came from `extra=` and is worth emitting.
_RECORD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
# Extras other libraries attach that only make sense on a terminal.
_RECORD_ATTRIBUTES |= {"color_message"}


class RequestContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        if not hasattr(record, "user_id"):
            user_id = user_id_var.get()
            if user_id is not None:
                record.user_id = user_id
        # The span active where the record was logged (request, Celery task, consumer handler), when traced.
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            record.trace_id = format(span_context.trace_id, "032x")
            record.span_id = format(span_context.span_id, "016x")
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "timestamp": datetime.fromtimestamp(record.created, tz=UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(
            (key, value)
            for key, value in vars(record).items()
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
        )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        try:
            # orjson: the access line of every request is formatted here.
            return orjson.dumps(entry, default=str).decode()
        except TypeError:
            # What orjson refuses (keys that are not strings, integers past 64 bits), the json module writes.
            return json.dumps(entry, default=str)
