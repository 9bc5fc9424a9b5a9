"""The suite runs against real PostgreSQL and Redis (`make test` points at the local ones) and says so loudly."""

import pytest
import redis
from django.conf import settings
from django.db import connection


def _require_services() -> None:
    engine = settings.DATABASES["default"]["ENGINE"]
    if not engine.endswith("postgresql"):
        pytest.exit(
            f"The suite needs PostgreSQL, but DATABASE_URL gives {engine}. Run it with `make test`.", returncode=3
        )
    if not settings.REDIS_URL:
        pytest.exit("The suite needs Redis, but REDIS_URL is not set. Run it with `make test`.", returncode=3)
    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        pytest.exit(f"Redis is unreachable at {settings.REDIS_URL}: {exc}", returncode=3)


def pytest_sessionstart(session) -> None:
    _require_services()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    # Reaching the database once up front turns "connection refused" into one clear message.
    with django_db_blocker.unblock():
        try:
            connection.ensure_connection()
        except Exception as exc:  # noqa: BLE001 - any driver error means the same thing here
            pytest.exit(f"PostgreSQL is unreachable via DATABASE_URL: {exc}", returncode=3)


@pytest.fixture(autouse=True)
def _clean_redis():
    """Each test starts with an empty Redis database (the test URL points at a database of its own)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    yield
    client.close()
