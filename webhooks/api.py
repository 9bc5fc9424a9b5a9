"""Webhooks endpoints, both versions: v1 lists by offset pages, v2 by cursor. Rate limits, and the 429/503 answers
they add, are applied to every operation in config/api.py."""

from asgiref.sync import sync_to_async
from django.http import HttpResponse
from ninja import Query, Router, Status

from accounts.auth import jwt_auth
from core.pagination import CursorPage, CursorParams, Page, PageParams
from core.params import ObjectId
from core.paths import api_url, version_of
from core.schemas import INVALID, NOT_FOUND, UNAUTHENTICATED, ErrorOut
from webhooks import selectors
from webhooks.schemas import WebhookCreatedOut, WebhookDeliveryOut, WebhookIn, WebhookOut, WebhookPatchIn
from webhooks.services import endpoints

# Both versions, except the lists (offset pages in v1, cursor pages in v2) and the create beside each list: Django
# resolves a path to one router's view, so the operations of one path live in one router.
webhooks_router = Router(tags=["webhooks"], auth=jwt_auth)
webhooks_v1_router = Router(tags=["webhooks"], auth=jwt_auth)
webhooks_v2_router = Router(tags=["webhooks"], auth=jwt_auth)

_CREATE_WEBHOOK_NOTES = (
    "The URL's host must resolve to public addresses only (422, type `url_not_allowed`). `409`: `webhook_exists` "
    "for a URL you already registered, `webhook_limit_reached` past the per-user cap."
)


@webhooks_v1_router.post(
    "",
    response={201: WebhookCreatedOut, **UNAUTHENTICATED, 409: ErrorOut, **INVALID},
    summary="Register a URL to receive signed events (post.published); the secret is shown only here",
    description=_CREATE_WEBHOOK_NOTES,
)
async def create_webhook(request, payload: WebhookIn, response: HttpResponse):
    endpoint = await sync_to_async(endpoints.webhook_endpoint_create)(
        owner=request.auth, url=payload.url, events=[event.value for event in payload.events]
    )
    response["Location"] = api_url("webhook", version=version_of(request), webhook_id=endpoint["id"])
    return Status(201, endpoint)


@webhooks_v1_router.get("", response={200: Page[WebhookOut], **UNAUTHENTICATED, **INVALID}, summary="Your webhooks")
async def list_webhooks(request, params: Query[PageParams]):
    return await selectors.webhook_endpoint_page(owner=request.auth, params=params)


@webhooks_v2_router.post(
    "",
    response={201: WebhookCreatedOut, **UNAUTHENTICATED, 409: ErrorOut, **INVALID},
    summary="Register a URL to receive signed events (post.published); the secret is shown only here",
    description=_CREATE_WEBHOOK_NOTES,
)
async def create_webhook_v2(request, payload: WebhookIn, response: HttpResponse):
    return await create_webhook(request, payload, response)


@webhooks_v2_router.get(
    "", response={200: CursorPage[WebhookOut], **UNAUTHENTICATED, **INVALID}, summary="Your webhooks, newest first"
)
async def list_webhooks_v2(request, params: Query[CursorParams]):
    return await selectors.webhook_endpoint_cursor_page(owner=request.auth, cursor=params.cursor, limit=params.limit)


@webhooks_router.get(
    "/{webhook_id}",
    url_name="webhook",
    response={200: WebhookOut, **UNAUTHENTICATED, **NOT_FOUND, **INVALID},
    summary="One webhook",
)
async def get_webhook(request, webhook_id: ObjectId):
    return await selectors.webhook_endpoint_get(owner=request.auth, endpoint_id=webhook_id)


@webhooks_router.patch(
    "/{webhook_id}",
    response={200: WebhookOut, **UNAUTHENTICATED, **NOT_FOUND, 409: ErrorOut, **INVALID},
    summary="Change a webhook's URL, events or whether it is active",
)
async def update_webhook(request, webhook_id: ObjectId, payload: WebhookPatchIn):
    changes = payload.model_dump(exclude_unset=True)
    if "events" in changes:
        changes["events"] = [event.value for event in payload.events]
    return await sync_to_async(endpoints.webhook_endpoint_update)(
        owner=request.auth, endpoint_id=webhook_id, **changes
    )


@webhooks_router.delete(
    "/{webhook_id}",
    response={204: None, **UNAUTHENTICATED, **NOT_FOUND, **INVALID},
    summary="Delete a webhook and its delivery records",
)
async def delete_webhook(request, webhook_id: ObjectId):
    await sync_to_async(endpoints.webhook_endpoint_delete)(owner=request.auth, endpoint_id=webhook_id)
    return Status(204, None)


@webhooks_v1_router.get(
    "/{webhook_id}/deliveries",
    response={200: Page[WebhookDeliveryOut], **UNAUTHENTICATED, **NOT_FOUND, **INVALID},
    summary="A webhook's deliveries, newest first",
)
async def list_webhook_deliveries(request, webhook_id: ObjectId, params: Query[PageParams]):
    return await selectors.webhook_delivery_page(owner=request.auth, endpoint_id=webhook_id, params=params)


@webhooks_v2_router.get(
    "/{webhook_id}/deliveries",
    response={200: CursorPage[WebhookDeliveryOut], **UNAUTHENTICATED, **NOT_FOUND, **INVALID},
    summary="A webhook's deliveries, newest first, by cursor",
)
async def list_webhook_deliveries_v2(request, webhook_id: ObjectId, params: Query[CursorParams]):
    return await selectors.webhook_delivery_cursor_page(
        owner=request.auth, endpoint_id=webhook_id, cursor=params.cursor, limit=params.limit
    )
