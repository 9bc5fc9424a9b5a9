"""Settings come from the environment only: each backend choice, production refusals, `check --deploy`."""

import json
import subprocess

import pytest

from tests.helpers import PROJECT_ROOT, PYTHON, clean_env, run_manage

PRODUCTION_ENV = {
    "DJANGO_DEBUG": "false",
    "DJANGO_SECRET_KEY": "k7Vq2-production-like-secret-0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1",
    "DJANGO_ALLOWED_HOSTS": "api.example.com",
    "DATABASE_URL": "postgresql://app:secret@db.internal:5432/app",
    "REDIS_URL": "redis://redis.internal:6379/0",
}

_DUMP = """
import json, django
django.setup()
from django.conf import settings as s
from django.utils.module_loading import import_string
from django_redis.cache import RedisCache
db = s.DATABASES["default"]
print(json.dumps(default=repr, obj={
    "debug": s.DEBUG,
    "db_engine": db["ENGINE"], "db_name": db["NAME"], "conn_max_age": db.get("CONN_MAX_AGE"),
    "conn_health_checks": db.get("CONN_HEALTH_CHECKS"), "pool": db.get("OPTIONS", {}).get("pool"),
    "cache": s.CACHES["default"]["BACKEND"], "cache_location": s.CACHES["default"].get("LOCATION"),
    "cache_is_django_redis": issubclass(import_string(s.CACHES["default"]["BACKEND"]), RedisCache),
    "layer": s.CHANNEL_LAYERS["default"]["BACKEND"], "layer_config": s.CHANNEL_LAYERS["default"].get("CONFIG"),
    "broker": s.CELERY_BROKER_URL, "eager": s.CELERY_TASK_ALWAYS_EAGER, "admin_url": s.ADMIN_URL,
    "allowed_hosts": s.ALLOWED_HOSTS, "cors": s.CORS_ALLOWED_ORIGINS, "hashers": s.PASSWORD_HASHERS,
}))
"""


def load_settings(**env: str) -> dict:
    result = subprocess.run(
        [PYTHON, "-c", _DUMP],
        cwd=PROJECT_ROOT,
        env=clean_env(DJANGO_SETTINGS_MODULE="config.settings", **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_nothing_set_gives_the_embedded_default(tmp_path):
    loaded = load_settings(DJANGO_DATA_DIR=str(tmp_path))
    assert loaded["debug"] is True
    assert loaded["db_engine"] == "django.db.backends.sqlite3"
    assert loaded["db_name"] == str(tmp_path / "db.sqlite3")
    assert loaded["cache"] == "django.core.cache.backends.locmem.LocMemCache"
    assert loaded["layer"] == "channels.layers.InMemoryChannelLayer"
    assert loaded["eager"] is True
    assert loaded["admin_url"] == "admin/"


def test_postgresql_url_uses_the_native_pool_without_persistent_connections():
    loaded = load_settings(DATABASE_URL="postgresql://u:p@db:5432/app", DB_POOL_MIN="3", DB_POOL_MAX="7")
    assert loaded["db_engine"] == "core.postgresql"
    assert loaded["db_name"] == "app"
    assert loaded["conn_max_age"] == 0
    assert loaded["conn_health_checks"] is True
    assert loaded["pool"] == {"min_size": 3, "max_size": 7, "timeout": 10}


def test_redis_url_drives_cache_channel_layer_and_broker():
    loaded = load_settings(REDIS_URL="redis://cache:6379/2")
    # django-redis, through django-prometheus' subclass that counts hits and misses (with the speed layer on, its
    # subclass whose async calls run on the event loop: tests/fastpath/test_switch.py).
    assert loaded["cache"] == "fastpath.cache.RedisCache"
    assert loaded["cache_is_django_redis"] is True
    assert loaded["cache_location"] == "redis://cache:6379/2"
    assert loaded["layer"] == "channels_redis.pubsub.RedisPubSubChannelLayer"
    assert loaded["layer_config"]["hosts"][0]["address"] == "redis://cache:6379/2"
    assert loaded["broker"] == "redis://cache:6379/2"
    assert loaded["eager"] is False


def test_the_core_channel_layer_can_be_chosen():
    loaded = load_settings(REDIS_URL="redis://cache:6379/2", CHANNEL_LAYER="redis")
    assert loaded["layer"] == "channels_redis.core.RedisChannelLayer"
    assert loaded["layer_config"]["capacity"] == 1000


def test_celery_broker_url_overrides_redis_url():
    loaded = load_settings(REDIS_URL="redis://cache:6379/2", CELERY_BROKER_URL="redis://broker:6379/5")
    assert loaded["broker"] == "redis://broker:6379/5"
    assert loaded["eager"] is False


def test_lists_and_admin_path_are_parsed():
    loaded = load_settings(
        DJANGO_ALLOWED_HOSTS="a.example.com, b.example.com",
        CORS_ALLOWED_ORIGINS="https://app.example.com",
        DJANGO_ADMIN_URL="/staff-console",
    )
    assert loaded["allowed_hosts"] == ["a.example.com", "b.example.com"]
    assert loaded["cors"] == ["https://app.example.com"]
    assert loaded["admin_url"] == "staff-console/"


def test_argon2_hashes_passwords_first():
    assert load_settings()["hashers"][0] == "django.contrib.auth.hashers.Argon2PasswordHasher"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DJANGO_DEBUG": "false"}, "DJANGO_SECRET_KEY is not set"),
        ({"DJANGO_DEBUG": "perhaps"}, "DJANGO_DEBUG must be true or false"),
        ({"DB_POOL_MIN": "9", "DB_POOL_MAX": "2"}, "DB_POOL_MIN (9) must not exceed DB_POOL_MAX (2)"),
        ({"DB_POOL_MAX": "many"}, "DB_POOL_MAX must be an integer"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT must be json or console"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got 'LOUD'"),
        (
            {"METRICS_ALLOWED_NETWORKS": "10.0.0.0/8,bogus"},
            "METRICS_ALLOWED_NETWORKS must be comma-separated networks (CIDR) or addresses, got '10.0.0.0/8,bogus'",
        ),
        (
            {"REDIS_URL": "redis://cache:6379/0", "CHANNEL_LAYER": "kafka"},
            "CHANNEL_LAYER must be redis-pubsub or redis",
        ),
        (
            {"CELERY_TASK_SOFT_TIME_LIMIT": "60", "CELERY_TASK_TIME_LIMIT": "60"},
            "CELERY_TASK_TIME_LIMIT must be longer than CELERY_TASK_SOFT_TIME_LIMIT",
        ),
        (
            {
                "CELERY_TASK_SOFT_TIME_LIMIT": "500",
                "CELERY_TASK_TIME_LIMIT": "600",
                "CELERY_VISIBILITY_TIMEOUT": "300",
            },
            "CELERY_VISIBILITY_TIMEOUT must be longer than CELERY_TASK_TIME_LIMIT",
        ),
        ({"JOB_LEASE_SECONDS": "99999"}, "JOB_LEASE_SECONDS must be shorter than CELERY_VISIBILITY_TIMEOUT"),
    ],
)
def test_bad_configuration_refuses_to_start_with_a_clear_message(env, message):
    result = run_manage("check", env=clean_env(**env))
    assert result.returncode != 0
    assert message in result.stderr


def test_production_settings_pass_check_deploy():
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", env=clean_env(**PRODUCTION_ENV))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_probe_paths_are_exempt_from_the_https_redirect(tmp_path):
    env = clean_env(**{**PRODUCTION_ENV, "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3", "REDIS_URL": ""})
    script = (
        "import django; django.setup()\n"
        "from django.test import Client\n"
        "c = Client(HTTP_HOST='api.example.com')\n"
        "print(c.get('/health').status_code, c.get('/api/v1/openapi.json').status_code)\n"
    )
    result = subprocess.run(
        [PYTHON, "-c", script],
        cwd=PROJECT_ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["200", "301"]


def test_models_and_migrations_agree(tmp_path):
    result = run_manage("makemigrations", "--check", "--dry-run", env=clean_env(DJANGO_DATA_DIR=str(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_child_processes_inherit_none_of_the_developers_settings(monkeypatch):
    """Every variable the code reads is stripped from the environment test servers and workers start with, so a
    developer's shell (a METRICS_TOKEN, an OTEL endpoint) cannot change what a test sees."""
    from tests.deploy.k8s import variables_read_by_the_code

    for name in variables_read_by_the_code():
        monkeypatch.setenv(name, "from-the-shell")
    leaked = sorted(set(variables_read_by_the_code()) & set(clean_env()))
    assert not leaked, f"clean_env() passes these on: {leaked}"
