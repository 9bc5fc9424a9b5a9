from django.contrib import admin

from posts import services
from posts.models import Post, PostStatus


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
