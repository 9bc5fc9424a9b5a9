"""Endpoints their owners register, change and delete through the API."""

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User
from core.errors import Conflict, NotFound
from webhooks.models import WebhookEndpoint
from webhooks.selectors import webhook_endpoint_snapshot
from webhooks.services.signing import new_secret
from webhooks.services.targets import url_check


def _is_duplicate_url(exc: IntegrityError) -> bool:
    return "webhooks_owner_url_unique" in str(exc)


_DUPLICATE_URL = "You already have a webhook for this URL."


def webhook_endpoint_create(*, owner: User, url: str, events: list[str]) -> dict:
    """The new endpoint, with its secret: the only time the secret is shown."""
    url_check(url)  # DNS, before any transaction is open
    try:
        with transaction.atomic():
            # The owner's row lock serialises their concurrent creations, so the cap holds.
            User.objects.select_for_update().filter(pk=owner.pk).first()
            if WebhookEndpoint.objects.filter(owner=owner).count() >= settings.WEBHOOK_MAX_ENDPOINTS_PER_USER:
                cap = settings.WEBHOOK_MAX_ENDPOINTS_PER_USER
                raise Conflict(
                    f"You have {cap} webhooks, the most allowed; delete one first.", code="webhook_limit_reached"
                )
            endpoint = WebhookEndpoint.objects.create(owner=owner, url=url, events=events, secret=new_secret())
    except IntegrityError as exc:
        if _is_duplicate_url(exc):
            raise Conflict(_DUPLICATE_URL, code="webhook_exists") from None
        raise
    return {**webhook_endpoint_snapshot(endpoint), "secret": endpoint.secret}


def webhook_endpoint_update(
    *,
    owner: User,
    endpoint_id: int,
    url: str | None = None,
    events: list[str] | None = None,
    is_active: bool | None = None,
) -> dict:
    """None leaves a field as it is (the API refuses an explicit null)."""
    endpoint = WebhookEndpoint.objects.filter(pk=endpoint_id, owner=owner).first()
    if endpoint is None:
        raise NotFound("No such webhook.")
    if url is not None and url != endpoint.url:
        url_check(url)
    requested = {"url": url, "events": events, "is_active": is_active}
    changed = {name: value for name, value in requested.items() if value is not None}
    try:
        with transaction.atomic():
            updated = WebhookEndpoint.objects.filter(pk=endpoint_id, owner=owner).update(
                **changed, updated_at=timezone.now()
            )
    except IntegrityError as exc:
        if _is_duplicate_url(exc):
            raise Conflict(_DUPLICATE_URL, code="webhook_exists") from None
        raise
    if not updated:
        raise NotFound("No such webhook.")
    return webhook_endpoint_snapshot(WebhookEndpoint.objects.get(pk=endpoint_id))


def webhook_endpoint_delete(*, owner: User, endpoint_id: int) -> None:
    """Its deliveries go with it; their queued tasks then find nothing to do."""
    deleted, _ = WebhookEndpoint.objects.filter(pk=endpoint_id, owner=owner).delete()
    if not deleted:
        raise NotFound("No such webhook.")
