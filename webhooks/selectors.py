"""Reads of the webhooks app: an owner's endpoints and their deliveries, as plain dicts (never the secret)."""

from core.errors import NotFound
from core.pagination import Keyset, PageParams, paginate
from webhooks.models import WebhookDelivery, WebhookEndpoint

_ENDPOINT_COLUMNS = ("id", "url", "events", "is_active", "created_at", "updated_at")
_DELIVERY_COLUMNS = (
    "id",
    "event",
    "event_id",
    "status",
    "attempts",
    "last_response_status",
    "last_error",
    "created_at",
    "next_attempt_at",
    "delivered_at",
)


def webhook_endpoint_snapshot(endpoint: WebhookEndpoint) -> dict:
    """An endpoint as its owner sees it, without its secret."""
    return {name: getattr(endpoint, name) for name in _ENDPOINT_COLUMNS}


async def webhook_endpoint_page(*, owner, params: PageParams) -> dict:
    endpoints = WebhookEndpoint.objects.filter(owner_id=owner.pk).order_by("-created_at", "-id")
    return await paginate(endpoints.values(*_ENDPOINT_COLUMNS), params)


WEBHOOKS_NEWEST_FIRST = Keyset(WebhookEndpoint, ("-created_at", "-id"), salt="webhooks.cursor")
DELIVERIES_NEWEST_FIRST = Keyset(WebhookDelivery, ("-created_at", "-id"), salt="webhooks.deliveries.cursor")


async def webhook_endpoint_cursor_page(*, owner, cursor: str | None, limit: int) -> dict:
    endpoints = WebhookEndpoint.objects.filter(owner_id=owner.pk).order_by(*WEBHOOKS_NEWEST_FIRST.order)
    return await WEBHOOKS_NEWEST_FIRST.page(endpoints.values(*_ENDPOINT_COLUMNS), cursor=cursor, limit=limit)


async def webhook_endpoint_get(*, owner, endpoint_id: int) -> dict:
    """The owner's endpoint; someone else's does not exist for them."""
    endpoint = (
        await WebhookEndpoint.objects.filter(pk=endpoint_id, owner_id=owner.pk).values(*_ENDPOINT_COLUMNS).afirst()
    )
    if endpoint is None:
        raise NotFound("No such webhook.")
    return endpoint


async def webhook_delivery_page(*, owner, endpoint_id: int, params: PageParams) -> dict:
    """An endpoint's deliveries, newest first."""
    if not await WebhookEndpoint.objects.filter(pk=endpoint_id, owner_id=owner.pk).aexists():
        raise NotFound("No such webhook.")
    deliveries = WebhookDelivery.objects.filter(endpoint_id=endpoint_id).order_by("-created_at", "-id")
    return await paginate(deliveries.values(*_DELIVERY_COLUMNS), params)


async def webhook_delivery_cursor_page(*, owner, endpoint_id: int, cursor: str | None, limit: int) -> dict:
    """An endpoint's deliveries, newest first."""
    if not await WebhookEndpoint.objects.filter(pk=endpoint_id, owner_id=owner.pk).aexists():
        raise NotFound("No such webhook.")
    deliveries = WebhookDelivery.objects.filter(endpoint_id=endpoint_id).order_by(*DELIVERIES_NEWEST_FIRST.order)
    return await DELIVERIES_NEWEST_FIRST.page(deliveries.values(*_DELIVERY_COLUMNS), cursor=cursor, limit=limit)
