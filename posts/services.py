"""Writes of the posts app. Each one updates the cache once its transaction commits (see posts/cache.py), before the
caller gets its answer: a client never reads its own write stale."""

from functools import partial

from django.db import transaction
from django.utils import timezone

from accounts.models import User
from core.errors import NotFound, PermissionDenied
from posts import cache as posts_cache
from posts.models import Post, PostStatus
from posts.selectors import can_change, can_view, snapshot_of
from posts.signals import posts_published


def _written(snapshots: list[dict]) -> None:
    posts_cache.details_store(snapshots)
    posts_cache.lists_changed()


def _published(post_ids: list[int]) -> None:
    # Robust: the posts are published whatever a receiver does with the news (its error is logged by Django).
    posts_published.send_robust(sender=Post, post_ids=post_ids)


def _deleted(post_ids: list[int]) -> None:
    posts_cache.details_deleted(post_ids)
    posts_cache.lists_changed()


def _locked_for_change(*, actor: User, post_id: int) -> Post:
    """The post, row-locked until the transaction ends, once the actor may change it: 404 when they may not even
    see it (no existence leak), 403 when they see it but it is not theirs."""
    post = Post.objects.select_for_update(of=("self",)).select_related("author").filter(pk=post_id).first()
    if post is None or not can_view(actor, status=post.status, author_id=post.author_id):
        raise NotFound("No such post.")
    if not can_change(actor, author_id=post.author_id):
        raise PermissionDenied("Only the author or staff can change this post.")
    return post


@transaction.atomic
def post_create(*, author: User, title: str, body: str, status: str) -> dict:
    post = Post.objects.create(author=author, title=title, body=body, status=status)
    snapshot = snapshot_of(post)
    transaction.on_commit(partial(_written, [snapshot]))
    if status == PostStatus.PUBLISHED:
        transaction.on_commit(partial(_published, [post.pk]))
    return snapshot


@transaction.atomic
def post_update(
    *, actor: User, post_id: int, title: str | None = None, body: str | None = None, status: str | None = None
) -> dict:
    """None leaves a field as it is (the API refuses an explicit null)."""
    post = _locked_for_change(actor=actor, post_id=post_id)
    requested = {"title": title, "body": body, "status": status}
    changed = {name: value for name, value in requested.items() if value is not None and value != getattr(post, name)}
    if changed:
        for name, value in changed.items():
            setattr(post, name, value)
        post.save(update_fields=[*changed, "updated_at"])
        transaction.on_commit(partial(_written, [snapshot_of(post)]))
        if changed.get("status") == PostStatus.PUBLISHED:
            transaction.on_commit(partial(_published, [post.pk]))
    return snapshot_of(post)


@transaction.atomic
def post_delete(*, actor: User, post_id: int) -> None:
    post = _locked_for_change(actor=actor, post_id=post_id)
    post.delete()
    transaction.on_commit(partial(_deleted, [post_id]))


# --- staff tools (admin) ---------------------------------------------------------------------------------


@transaction.atomic
def posts_set_status(*, post_ids: list[int], status: str) -> int:
    """Publish or unpublish many posts at once; returns how many changed."""
    changing = list(
        Post.objects.select_for_update().filter(pk__in=post_ids).exclude(status=status).values_list("pk", flat=True)
    )
    if not changing:
        return 0
    Post.objects.filter(pk__in=changing).update(status=status, updated_at=timezone.now())
    snapshots = [snapshot_of(post) for post in Post.objects.select_related("author").filter(pk__in=changing)]
    transaction.on_commit(partial(_written, snapshots))
    if status == PostStatus.PUBLISHED:
        transaction.on_commit(partial(_published, changing))
    return len(changing)


def post_saved(*, post: Post, published: bool = False) -> None:
    """A post was saved outside these services (the admin form): refresh what the cache holds of it. `published`:
    this save published it."""
    post = Post.objects.select_related("author").get(pk=post.pk)
    transaction.on_commit(partial(_written, [snapshot_of(post)]))
    if published and post.status == PostStatus.PUBLISHED:
        transaction.on_commit(partial(_published, [post.pk]))


def posts_deleted(*, post_ids: list[int]) -> None:
    """Posts were deleted outside these services (the admin)."""
    transaction.on_commit(partial(_deleted, list(post_ids)))


def author_public_name_changed(*, author_id: int) -> None:
    """An author's username or display name changed: every cached post of theirs shows the old one."""
    post_ids = list(Post.objects.filter(author_id=author_id).values_list("pk", flat=True))
    if not post_ids:
        return

    def forget() -> None:
        posts_cache.details_drop(post_ids)
        posts_cache.lists_changed()

    transaction.on_commit(forget)
