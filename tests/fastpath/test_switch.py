"""The speed layer's one switch and its guards: FAST_PATH=false is stock Django, ninja, Channels and uvicorn; on,
an installed version other than the one a private override was written for stops the start, and Django's deploy
checks still see the layer's middlewares."""

import json
import subprocess

import pytest

from fastpath import checks
from fastpath.guards import PRIVATE_USES
from tests.helpers import PROJECT_ROOT, PYTHON, clean_env, run_manage
from tests.test_settings import PRODUCTION_ENV

_DUMP = """
import json, django
django.setup()
from django.conf import settings as s
from channels.consumer import AsyncConsumer
from config import asgi
from core.ratelimit import get_limiter
print(json.dumps({
    "middleware": s.MIDDLEWARE,
    "cache": s.CACHES["default"]["BACKEND"],
    "handler": type(asgi.django_asgi_app).__module__,
    "application": asgi.application.__module__,
    "dispatch": AsyncConsumer.dispatch.__module__,
    "limiter_redis": type(get_limiter().limiter.keyvalue.scripts).__module__,
}))
"""


def layer_as_configured(fast_path: str) -> dict:
    env = clean_env(DJANGO_SETTINGS_MODULE="config.settings", FAST_PATH=fast_path, **PRODUCTION_ENV)
    result = subprocess.run(
        [PYTHON, "-c", _DUMP], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_off_the_service_is_stock_django_ninja_channels():
    off = layer_as_configured("false")
    assert not [path for path in off["middleware"] if path.startswith("fastpath.")]
    assert "django.middleware.security.SecurityMiddleware" in off["middleware"]
    assert off["cache"] == "django_prometheus.cache.backends.redis.RedisCache"
    assert off["handler"] == "django.core.handlers.asgi"
    assert off["application"] == "channels.routing"
    assert off["dispatch"] == "channels.consumer"
    assert off["limiter_redis"] == "core.redis"


def test_on_the_layer_is_what_runs_and_what_settings_list():
    on = layer_as_configured("true")
    assert "fastpath.middleware.SecurityMiddleware" in on["middleware"]
    assert "django.middleware.security.SecurityMiddleware" not in on["middleware"]
    assert on["cache"] == "fastpath.cache.RedisCache"
    assert on["handler"] == on["application"] == "fastpath.asgi"
    assert on["dispatch"] == "fastpath.channels"
    assert on["limiter_redis"] == "fastpath.redis"


def test_the_installed_versions_are_the_ones_the_overrides_were_written_for(settings):
    settings.FAST_PATH = True
    assert checks.private_apis_match_their_versions() == []


def test_another_installed_version_stops_the_start_with_the_library_named(monkeypatch, settings):
    settings.FAST_PATH = True
    installed = {use.distribution: use.version for use in PRIVATE_USES} | {"django-ninja": "1.8.0"}
    monkeypatch.setattr(checks, "version", installed.__getitem__)
    errors = checks.private_apis_match_their_versions()
    assert {error.id for error in errors} == {"fastpath.E001"}
    assert all(
        "django-ninja 1.7.1" in error.msg and "django-ninja 1.8.0 is installed" in error.msg for error in errors
    )
    assert sorted(where for where in ("fastpath/responses.py", "config/api.py") for e in errors if where in e.msg) == [
        "config/api.py",
        "fastpath/responses.py",
    ]
    settings.FAST_PATH = False
    assert checks.private_apis_match_their_versions() == []


@pytest.mark.parametrize("fast_path", ["true", "false"])
def test_production_settings_pass_check_deploy_either_way(fast_path):
    result = run_manage(
        "check", "--deploy", "--fail-level", "WARNING", env=clean_env(FAST_PATH=fast_path, **PRODUCTION_ENV)
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_django_s_deploy_checks_still_see_the_layer_s_middlewares():
    # HSTS off: Django's check finds it only when it finds SecurityMiddleware, which the layer runs as a subclass.
    env = clean_env(FAST_PATH="true", **{**PRODUCTION_ENV, "DJANGO_SECURE_HSTS_SECONDS": "0"})
    result = run_manage("check", "--deploy", env=env)
    assert "fastpath.security.W004" in result.stdout + result.stderr
