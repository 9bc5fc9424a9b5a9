"""Users' public profiles in the cache (accounts/cache.py): served from Redis, never stale after a write.

Writes commit for real (transaction=True): the cache is replaced when a transaction commits, as in production."""

import pytest
from asgiref.sync import async_to_sync
from redis import Redis

from accounts import cache as accounts_cache
from accounts import services
from accounts.models import User

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def redis_cache(settings):
    client = Redis.from_url(settings.CACHES["default"]["LOCATION"])
    yield client
    client.close()


def cached_profile_keys(redis_cache) -> set[str]:
    return {key.decode() for key in redis_cache.keys("*users:u1:public:*")}


def profile(client, user_id: int):
    return client.get(f"/api/v1/users/{user_id}")


def test_a_profile_read_fills_the_cache_and_is_then_served_from_it(client, make_user, redis_cache):
    user = make_user(display_name="Cached")
    first = profile(client, user.pk)
    assert first.status_code == 200
    (key,) = cached_profile_keys(redis_cache)
    assert key.endswith(f"users:u1:public:{user.pk}")
    # Changed behind the cache's back (no save, no signal): the cached copy is what is served.
    User.objects.filter(pk=user.pk).update(display_name="Behind the cache")
    second = profile(client, user.pk)
    assert second.content == first.content
    # The author of an author's page is the same entry.
    assert client.get(f"/api/v1/authors/{user.pk}/posts").json()["author"] == first.json()


def test_a_new_display_name_shows_at_once(client, make_user, bearer):
    user = make_user(display_name="Before")
    assert profile(client, user.pk).json()["display_name"] == "Before"
    changed = client.patch("/api/v1/users/me", {"display_name": "After"}, content_type="application/json",
                           headers=bearer(user))  # fmt: skip
    assert changed.status_code == 200
    assert profile(client, user.pk).json()["display_name"] == "After"


def test_a_save_of_the_whole_user_as_the_admin_does_replaces_the_entry(client, make_user):
    user = make_user(username="old-name")
    assert profile(client, user.pk).json()["username"] == "old-name"
    user.username = "new-name"
    user.save()
    assert profile(client, user.pk).json()["username"] == "new-name"


def test_deactivated_and_deleted_users_are_gone_at_once_and_a_reactivated_one_is_back(client, make_user):
    user, other = make_user(), make_user()
    assert profile(client, user.pk).status_code == 200
    assert profile(client, other.pk).status_code == 200
    services.user_deactivate(user=user)
    assert profile(client, user.pk).status_code == 404
    services.user_reactivate(user=user)
    assert profile(client, user.pk).status_code == 200
    other_id = other.pk
    other.delete()
    assert profile(client, other_id).status_code == 404


def test_a_reader_that_loaded_the_old_row_cannot_put_it_back(client, make_user):
    user = make_user(display_name="Old")
    stale_row = profile(client, user.pk).json()
    user.display_name = "New"
    user.save(update_fields=["display_name"])
    # A request that read the row before the write fills the cache only after it: too late.
    async_to_sync(accounts_cache.profile_fill)({**stale_row, "display_name": "Old"})
    assert profile(client, user.pk).json()["display_name"] == "New"


def test_saves_that_change_nothing_public_leave_the_entry_alone(client, make_user, redis_cache):
    user = make_user()
    profile(client, user.pk)
    (key,) = cached_profile_keys(redis_cache)
    before = redis_cache.get(key)
    user.set_password("another-long-password-42")
    user.save(update_fields=["password"])
    assert redis_cache.get(key) == before


def test_missing_users_are_not_cached_so_a_new_account_shows_at_once(client, redis_cache):
    assert profile(client, 987_654).status_code == 404
    assert cached_profile_keys(redis_cache) == set()


@pytest.mark.parametrize("enabled", [True, False])
def test_the_response_cache_setting_covers_profiles(client, make_user, settings, redis_cache, enabled):
    settings.RESPONSE_CACHE = enabled
    user = make_user()
    assert profile(client, user.pk).status_code == 200
    assert bool(cached_profile_keys(redis_cache)) is enabled
