"""The Celery application; its settings are the CELERY_* names in config/settings.py."""

import os

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def _log_backends(**kwargs) -> None:
    from core.backends import log_backends_in_use

    log_backends_in_use("celery worker")
