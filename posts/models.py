from django.conf import settings
from django.db import models
from django.utils import timezone

from fastpath.db import LoopManager

MAX_TITLE_LENGTH = 200
MAX_BODY_LENGTH = 100_000


class PostStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    PUBLISHED = "published", "Published"


class Post(models.Model):
    Status = PostStatus

    title = models.CharField(max_length=MAX_TITLE_LENGTH)
    body = models.TextField(max_length=MAX_BODY_LENGTH, blank=True)
    status = models.CharField(max_length=16, choices=Status, default=Status.DRAFT)
    # The composite indexes below lead with author_id, so the FK's own single-column index would be redundant.
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="posts", db_index=False
    )
    # A default rather than auto_now_add so that seed data can carry realistic, spread-out dates.
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = LoopManager()

    class Meta:
        # Newest first, with id breaking ties so that offsets and cursors see one total order.
        ordering = ("-created_at", "-id")
        indexes = [
            # Everyone's list (published only), staff's status filter: WHERE status = ? ORDER BY created_at, id.
            models.Index(fields=["status", "-created_at", "-id"], name="posts_status_created_idx"),
            # An author's posts: WHERE author_id = ? AND status = ? ORDER BY created_at, id.
            models.Index(fields=["author", "status", "-created_at", "-id"], name="posts_author_status_idx"),
            # Lists that mix statuses (staff, or a user seeing published posts plus their own drafts):
            # walked in order with the visibility rule as a filter, instead of sorting the whole table.
            models.Index(fields=["-created_at", "-id"], name="posts_created_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=PostStatus.values), name="posts_status_valid"),
            models.CheckConstraint(condition=~models.Q(title=""), name="posts_title_not_empty"),
        ]

    def __str__(self) -> str:
        return self.title
