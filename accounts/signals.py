"""Every change to what a user's public profile shows reaches its cached copy (accounts/cache.py)."""

from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from accounts import cache as accounts_cache
from accounts import services


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="accounts.public_profile_saved")
def _user_saved(sender, instance, created, update_fields, **kwargs):
    if created:
        # Nobody can have cached a user that did not exist (misses are not cached).
        return
    # A save without update_fields (a form, the admin) may have changed anything.
    if update_fields is None or accounts_cache.SHOWN_FIELDS & set(update_fields):
        services.public_profiles_changed(user_ids=[instance.pk])


@receiver(post_delete, sender=settings.AUTH_USER_MODEL, dispatch_uid="accounts.public_profile_deleted")
def _user_deleted(sender, instance, **kwargs):
    services.public_profiles_changed(user_ids=[instance.pk])
