from django.conf import settings
from django.db import models

from fastpath.db import LoopManager

MAX_MESSAGE_LENGTH = 4000
MAX_SLUG_LENGTH = 100


class Room(models.Model):
    slug = models.SlugField(max_length=MAX_SLUG_LENGTH, unique=True, allow_unicode=True)
    name = models.CharField(max_length=100)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = LoopManager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Message(models.Model):
    """A chat message, committed before anyone is told about it. `client_id` is the sender's idempotency key:
    a resend after a dropped connection finds the stored message instead of storing a second one."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_messages")
    text = models.TextField(max_length=MAX_MESSAGE_LENGTH)
    client_id = models.UUIDField()
    created_at = models.DateTimeField(auto_now_add=True)

    objects = LoopManager()

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["user", "client_id"], name="chat_message_user_client_id")]
        # History and backfill read a room's messages by id range.
        indexes = [models.Index(fields=["room", "id"], name="chat_message_room_id")]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.room_id}: {self.text[:40]}"
