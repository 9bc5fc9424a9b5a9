"""Log records as one JSON object per line, carrying the ids of the request, trace, span and user they belong to."""

import json
import logging
import re
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


# Secrets as they can appear in a log line: JWTs anywhere, credentials after an auth scheme, and the values of
# query, form, cookie and JSON fields that carry one (a WebSocket ticket in the server's access line, a password in
# a repr).
_SECRET_NAMES = (
    r"ticket|token|access_token|refresh_token|password|current_password|new_password|secret|signature|sessionid|"
    r"csrftoken|csrfmiddlewaretoken"
)
_SECRETS = (
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), "[redacted]"),
    (re.compile(r"(?i)\b(bearer|token|basic)(\s+)[A-Za-z0-9._~+/=-]{6,}"), r"\1\2[redacted]"),
    (re.compile(rf"(?i)\b({_SECRET_NAMES})=[^&;\s'\"]+"), r"\1=[redacted]"),
    (re.compile(rf'(?i)"({_SECRET_NAMES})"(\s*:\s*)"(?:[^"\\]|\\.)*"'), r'"\1"\2"[redacted]"'),
    (re.compile(rf"(?i)'({_SECRET_NAMES})'(\s*:\s*)'(?:[^'\\]|\\.)*'"), r"'\1'\2'[redacted]'"),
)


# Every match of the patterns above holds one of these (lowercased): a line without any (an access line, most
# lines) costs a few substring checks instead of the patterns' scans (a tenth of a request's logging otherwise).
_SECRET_WORDS = ("eyj", "bearer", "basic", "token", "ticket", "password", "secret", "signature", "sessionid", "csrf")


def redact_secrets(text: str) -> str:
    lowered = text.lower()
    if not any(word in lowered for word in _SECRET_WORDS):
        return text
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecretsFilter(logging.Filter):
    """No token, ticket, password, cookie or signature reaches a log line: the message (with its arguments), the
    string extras and the traceback of every record are redacted before any formatter sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_secrets(message)
        if redacted is not message:
            record.msg, record.args = redacted, None
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and type(value) is str:
                redacted_value = redact_secrets(value)
                if redacted_value is not value:
                    setattr(record, key, redacted_value)
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_secrets(logging.Formatter().formatException(record.exc_info))
        return True


class ServiceUnavailableFilter(logging.Filter):
    """For `django.request`, which logs every 5xx answer: a 503 is the service's own answer to an outage (the
    database, the limiter), logged once by what saw the outage, never once per request refused."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "status_code", None) != 503


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
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        try:
            # orjson: the access line of every request is formatted here.
            return orjson.dumps(entry, default=str).decode()
        except TypeError:
            # What orjson refuses (keys that are not strings, integers past 64 bits), the json module writes.
            return json.dumps(entry, default=str)
