from django.contrib import admin

from core.admin import WorkerWrittenAdmin
from webhooks.models import WebhookDelivery, WebhookEndpoint
from webhooks.services import dispatch


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ("id", "url", "owner", "is_active", "created_at", "updated_at")
    list_filter = ("is_active", "created_at")
    search_fields = ("url", "owner__username")
    list_select_related = ("owner",)
    raw_id_fields = ("owner",)
    ordering = ("-created_at", "-id")
    show_full_result_count = False
    # The secret is never shown here. Endpoints are registered through the API, which checks the URL (SSRF) and
    # makes the secret; staff may only switch one off or on.
    fields = ("owner", "url", "events", "is_active", "created_at", "updated_at")
    readonly_fields = ("owner", "url", "events", "created_at", "updated_at")

    def has_add_permission(self, request):
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(WorkerWrittenAdmin):
    list_display = (
        "id",
        "endpoint",
        "event",
        "event_id",
        "status",
        "attempts",
        "last_response_status",
        "created_at",
        "next_attempt_at",
        "delivered_at",
    )
    list_filter = ("status", "event", "created_at")
    search_fields = ("event_id", "endpoint__url")
    list_select_related = ("endpoint",)
    ordering = ("-created_at", "-id")
    show_full_result_count = False
    actions = ("retry",)

    @admin.action(description="Retry selected failed deliveries (a fresh round of attempts)", permissions=["change"])
    def retry(self, request, queryset):
        retried = dispatch.webhook_deliveries_retry(delivery_ids=queryset.values_list("pk", flat=True))
        self.message_user(request, f"Sent {retried} failed delivery(ies) back to the queue.")
