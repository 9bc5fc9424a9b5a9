"""RESPONSE_CACHE: the response cache of post reads can be turned off (the benchmark's "cache off" column)."""

import pytest
from redis import Redis

from posts.models import PostStatus

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("enabled", [True, False])
def test_the_response_cache_can_be_turned_off(client, make_user, make_post, settings, enabled):
    settings.RESPONSE_CACHE = enabled
    post = make_post(make_user(), status=PostStatus.PUBLISHED)
    redis = Redis.from_url(settings.CACHES["default"]["LOCATION"])
    redis.flushdb()
    assert client.get(f"/api/v1/posts/{post.pk}").status_code == 200
    assert client.get("/api/v2/posts").status_code == 200
    keys = {key.decode() for key in redis.keys("*")}
    assert any(":detail:" in key for key in keys) is enabled
    assert any(":list:" in key for key in keys) is enabled
