"""What the posts app tells other apps, without knowing them (webhooks listens; posts imports none of them)."""

from django.dispatch import Signal

# Sent, with `post_ids`, once the transaction that published these posts has committed (never for a rollback).
posts_published = Signal()
