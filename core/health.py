"""Liveness and readiness probes for orchestrators (see Operations in the API contract)."""

import asyncio
import logging
import secrets

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse

from core.lifecycle import is_draining

logger = logging.getLogger(__name__)


async def health(request):
    """The process is alive and serving; touches no dependency so a database outage does not restart pods."""
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        # Hand the connection back to the pool: this runs on a throwaway executor thread.
        connection.close()


def _check_cache() -> None:
    # A key of its own per check: probes from several processes must not read each other's writes.
    key = f"ready-check:{secrets.token_hex(8)}"
    cache.set(key, "ok", timeout=10)
    if cache.get(key) != "ok":
        raise RuntimeError("cache did not return the value just written")


async def _check_channel_layer() -> None:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "ready.check"})
    message = await layer.receive(channel)
    if message.get("type") != "ready.check":
        raise RuntimeError("channel layer returned an unexpected message")


async def _run_check(name: str, check) -> tuple[str, str]:
    # Blocking drivers run on the default executor (not the thread-sensitive one), so a hung dependency
    # times out here without stalling the ORM calls of other requests.
    call = check() if asyncio.iscoroutinefunction(check) else sync_to_async(check, thread_sensitive=False)()
    try:
        await asyncio.wait_for(call, timeout=settings.READY_CHECK_TIMEOUT_SECONDS)
    except Exception as exc:
        logger.warning("readiness check %s failed: %s", name, type(exc).__name__, exc_info=exc)
        return name, "failed"
    return name, "ok"


async def ready(request):
    """Ready to take traffic: the database, the cache and the channel layer each answered in time."""
    if is_draining():
        body = {"status": "shutting_down", "detail": "the process is shutting down", "code": "shutting_down"}
        return JsonResponse(body, status=503)
    results = await asyncio.gather(
        _run_check("database", _check_database),
        _run_check("cache", _check_cache),
        _run_check("channel_layer", _check_channel_layer),
    )
    checks = dict(results)
    failing = [name for name, state in checks.items() if state != "ok"]
    if failing:
        body = {
            "status": "unavailable",
            "checks": checks,
            "detail": f"not ready: {', '.join(failing)} check failed",
            "code": "not_ready",
        }
        return JsonResponse(body, status=503)
    return JsonResponse({"status": "ready", "checks": checks})
