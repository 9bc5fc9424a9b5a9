import pytest
from channels.layers import channel_layers
from django.core.cache import caches
from django.db import connection
from django_redis.cache import RedisCache

pytestmark = pytest.mark.django_db(transaction=True)

CLOSED_REDIS_PORT_URL = "redis://127.0.0.1:1/0"


def test_health_touches_no_dependency(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_suite_runs_on_real_postgresql_and_redis(settings):
    assert connection.vendor == "postgresql"
    # django-redis (django-prometheus' subclass of it, which counts hits and misses).
    assert isinstance(caches["default"], RedisCache)
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"] == "channels_redis.pubsub.RedisPubSubChannelLayer"


async def test_ready_when_every_dependency_answers(async_client):
    response = await async_client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "cache": "ok", "channel_layer": "ok"},
    }


async def test_ready_names_the_cache_when_redis_is_unreachable(async_client, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": CLOSED_REDIS_PORT_URL,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
        }
    }
    response = await async_client.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"] == {"database": "ok", "cache": "failed", "channel_layer": "ok"}
    assert "cache" in body["detail"]


@pytest.fixture
def unreachable_channel_layer(settings):
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [CLOSED_REDIS_PORT_URL]}}
    }
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


async def test_ready_names_the_channel_layer_when_it_is_unreachable(async_client, unreachable_channel_layer):
    response = await async_client.get("/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["channel_layer"] == "failed"
