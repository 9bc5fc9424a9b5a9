import logging
from importlib import import_module

from celery import shared_task
from django.conf import settings
from django.core.cache import cache

from accounts.models import User
from accounts.services import token_families_purge_expired, welcome_email_send

logger = logging.getLogger(__name__)

# Long enough to outlive any redelivery of the same task.
_SENT_MARKER_SECONDS = 7 * 24 * 3600


@shared_task(bind=True, max_retries=5, retry_backoff=True, retry_jitter=True)
def send_welcome_email(self, user_id: int) -> None:
    user = User.objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        return
    # Idempotent: a redelivered task (acks late, config/settings.py) does not mail the user twice.
    marker = f"welcome-email-sent:{user_id}"
    if not cache.add(marker, "1", timeout=_SENT_MARKER_SECONDS):
        return
    try:
        welcome_email_send(user=user)
    except OSError as exc:
        cache.delete(marker)
        logger.warning("welcome email to user %s failed, retrying: %s", user_id, exc)
        raise self.retry(exc=exc) from exc


@shared_task
def purge_expired_token_families() -> int:
    purged = token_families_purge_expired()
    logger.info("purged %s expired refresh token families", purged)
    return purged


@shared_task
def purge_expired_sessions() -> None:
    # What `manage.py clearsessions` does, on the beat schedule: the admin and the chat page log in by session.
    engine = import_module(settings.SESSION_ENGINE)
    engine.SessionStore.clear_expired()
