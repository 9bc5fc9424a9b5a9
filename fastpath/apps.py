from django.apps import AppConfig
from django.conf import settings


class FastpathConfig(AppConfig):
    name = "fastpath"
    verbose_name = "Speed layer"

    def ready(self) -> None:
        from fastpath import channels, checks  # noqa: F401  (registers the system checks)

        channels.install(settings.FAST_PATH)
