"""Bodies of the webhooks API: what an owner sends to register or change an endpoint, and what they are shown."""

from datetime import datetime
from typing import Annotated
from urllib.parse import quote, urlsplit, urlunsplit

from ninja import Field, Schema
from pydantic import AfterValidator

from core.schemas import StrictSchema
from webhooks.models import MAX_WEBHOOK_URL_LENGTH, WebhookDeliveryStatus, WebhookEvent

_MAX_HOST_LENGTH = 253
_PATH_SAFE = "/%:@!$&'()*+,;=~"
_QUERY_SAFE = _PATH_SAFE + "?"
# Bounded input; repeats are dropped.
_MAX_EVENTS_LISTED = 16


def _webhook_url(value: str) -> str:
    """An absolute http(s) URL with a host and no credentials; the host in ASCII (IDNA), no fragment. Whether it
    may receive webhooks (where it resolves to) is the service's check."""
    value = value.strip()
    if any(ord(char) < 0x21 or ord(char) == 0x7F for char in value):
        raise ValueError("Must not contain whitespace or control characters.")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError("Enter a valid URL.") from None
    if port == 0:
        raise ValueError("Enter a valid port.")
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("Only http and https URLs can receive webhooks.")
    if parts.username is not None or parts.password is not None:
        raise ValueError("Must not contain credentials; authenticate requests with the webhook's signature.")
    host = parts.hostname
    if not host:
        raise ValueError("Enter a URL with a host.")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError("The URL's host is not a valid host name.") from None
    if len(host) > _MAX_HOST_LENGTH:
        raise ValueError("The URL's host is too long.")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    # Percent-encoded (existing escapes kept): a request line is ASCII.
    path, query = quote(parts.path, safe=_PATH_SAFE), quote(parts.query, safe=_QUERY_SAFE)
    return urlunsplit((parts.scheme.lower(), netloc, path, query, ""))


WebhookUrl = Annotated[
    str,
    # What _webhook_url enforces first, stated in the schema: an absolute http(s) URL.
    Field(
        min_length=1, max_length=MAX_WEBHOOK_URL_LENGTH, json_schema_extra={"format": "uri", "pattern": "^https?://"}
    ),
    AfterValidator(_webhook_url),
]


def _distinct(events: list[WebhookEvent]) -> list[WebhookEvent]:
    return list(dict.fromkeys(events))


WebhookEvents = Annotated[
    list[WebhookEvent], Field(min_length=1, max_length=_MAX_EVENTS_LISTED), AfterValidator(_distinct)
]


class WebhookIn(StrictSchema):
    url: WebhookUrl
    events: WebhookEvents = Field(default_factory=lambda: [WebhookEvent.POST_PUBLISHED])


class WebhookPatchIn(StrictSchema):
    # Defaults are not validated, so an omitted field stays None while an explicit null is refused (422).
    url: WebhookUrl = None
    events: WebhookEvents = None
    is_active: bool = None


class WebhookOut(Schema):
    id: int
    url: str
    events: list[WebhookEvent]
    is_active: bool
    created_at: datetime
    updated_at: datetime


class WebhookCreatedOut(WebhookOut):
    secret: str = Field(description="The signing secret. Shown only in this response: store it now.")


class WebhookDeliveryOut(Schema):
    id: int
    event: WebhookEvent
    event_id: str = Field(description="The event's id, sent as X-Webhook-Id.")
    status: WebhookDeliveryStatus
    attempts: int
    last_response_status: int | None
    last_error: str
    created_at: datetime
    next_attempt_at: datetime | None = Field(description="When a pending delivery is attempted next.")
    delivered_at: datetime | None
