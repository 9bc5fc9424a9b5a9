"""Posts show their author's public name, so a change to it must reach the posts cache (posts/cache.py)."""

from django.conf import settings
from django.db.models.signals import post_save
from django.dispatch import receiver

from posts import services

# The user fields a post's representation shows.
_SHOWN_ON_POSTS = {"username", "display_name"}


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="posts.author_public_name_changed")
def _author_saved(sender, instance, created, update_fields, **kwargs):
    if created:
        return
    # A save without update_fields (a form, the admin) may have changed anything.
    if update_fields is None or _SHOWN_ON_POSTS & set(update_fields):
        services.author_public_name_changed(author_id=instance.pk)
