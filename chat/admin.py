from django.contrib import admin

from chat.models import Message, Room


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "created_by", "created_at")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    raw_id_fields = ("created_by",)
    list_select_related = ("created_by",)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    """Moderation: find messages by text or author and delete them (the delete action and the delete button)."""

    list_display = ("id", "room", "user", "short_text", "created_at")
    list_filter = ("room", "created_at")
    search_fields = ("text", "user__username", "room__slug")
    raw_id_fields = ("user", "room")
    list_select_related = ("user", "room")
    readonly_fields = ("room", "user", "text", "client_id", "created_at")
    ordering = ("-id",)

    @admin.display(description="text")
    def short_text(self, message: Message) -> str:
        return message.text if len(message.text) <= 80 else message.text[:79] + "…"

    def has_add_permission(self, request):
        # Messages are written by people in the room, not composed in the admin.
        return False
