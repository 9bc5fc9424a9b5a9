"""What the webhooks app hears from others: a published post is an event for every subscribed endpoint."""

from django.dispatch import receiver

from posts.signals import posts_published
from webhooks.services import dispatch


@receiver(posts_published, dispatch_uid="webhooks.posts_published")
def _posts_published(sender, post_ids, **kwargs):
    dispatch.posts_published(post_ids)
