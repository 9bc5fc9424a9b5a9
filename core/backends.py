"""Which backing services this process is configured to use, logged once when a server or worker starts."""

import logging
from urllib.parse import urlsplit

from django.conf import settings

logger = logging.getLogger("core.startup")


def _redact(url: str) -> str:
    """A URL without its credentials, safe to log."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def backends_in_use() -> dict[str, str]:
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        database_desc = f"sqlite ({database['NAME']})"
    else:
        database_desc = f"postgresql ({database.get('HOST') or 'local socket'}/{database['NAME']}, pooled)"

    cache_backend = settings.CACHES["default"]["BACKEND"]
    cache_desc = f"redis ({_redact(settings.REDIS_URL)})" if "redis" in cache_backend.lower() else "local-memory"

    layer_backend = settings.CHANNEL_LAYERS["default"]["BACKEND"]
    layer_desc = f"redis ({_redact(settings.REDIS_URL)})" if "redis" in layer_backend else "in-memory"

    if settings.CELERY_TASK_ALWAYS_EAGER:
        celery_desc = "eager (tasks run in-process)"
    else:
        celery_desc = f"broker {_redact(settings.CELERY_BROKER_URL)}"

    return {"database": database_desc, "cache": cache_desc, "channel_layer": layer_desc, "celery": celery_desc}


def log_backends_in_use(process: str) -> None:
    backends = backends_in_use()
    summary = ", ".join(f"{name}={value}" for name, value in backends.items())
    logger.info("%s starting; backends in use: %s", process, summary, extra={"backends": backends})
