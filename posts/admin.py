from django.contrib import admin

from core.admin import WorkerWrittenAdmin
from posts import services, webhooks
from posts.models import Post, PostStatus, WebhookDelivery, WebhookEndpoint


@admin.register(Post)
class PostAdmin(admin.ModelAdmin):
    list_display = ("title", "author", "status", "created_at", "updated_at")
    list_filter = ("status", "created_at")
    search_fields = ("title", "author__username")
    list_select_related = ("author",)
    # A select of every user would load the whole user table into the form.
    raw_id_fields = ("author",)
    readonly_fields = ("created_at", "updated_at")
    ordering = ("-created_at", "-id")
    # The unfiltered "N total" link would count the whole table on every changelist page.
    show_full_result_count = False
    actions = ("publish", "unpublish")

    @admin.action(description="Publish selected posts", permissions=["change"])
    def publish(self, request, queryset):
        changed = services.posts_set_status(
            post_ids=list(queryset.values_list("pk", flat=True)), status=PostStatus.PUBLISHED
        )
        self.message_user(request, f"Published {changed} post(s).")

    @admin.action(description="Unpublish selected posts (back to draft)", permissions=["change"])
    def unpublish(self, request, queryset):
        changed = services.posts_set_status(
            post_ids=list(queryset.values_list("pk", flat=True)), status=PostStatus.DRAFT
        )
        self.message_user(request, f"Unpublished {changed} post(s).")

    # Edits and deletes made here go past the services; they refresh the API's cache the same way.

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        services.post_saved(post=obj, published=not change or "status" in form.changed_data)

    def delete_model(self, request, obj):
        post_id = obj.pk
        super().delete_model(request, obj)
        services.posts_deleted(post_ids=[post_id])

    def delete_queryset(self, request, queryset):
        post_ids = list(queryset.values_list("pk", flat=True))
        super().delete_queryset(request, queryset)
        services.posts_deleted(post_ids=post_ids)


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
        retried = webhooks.webhook_deliveries_retry(delivery_ids=queryset.values_list("pk", flat=True))
        self.message_user(request, f"Sent {retried} failed delivery(ies) back to the queue.")
