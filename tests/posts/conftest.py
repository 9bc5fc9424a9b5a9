"""Post factories. Posts made here go straight to the database (as the admin or a data load would); tests that
write through the API check what a client sees afterwards."""

from datetime import timedelta

import pytest
from django.utils import timezone

from posts.models import Post, PostStatus


@pytest.fixture
def make_post(make_user):
    """`make_post(author=None, **fields)`: one post, published unless told otherwise."""

    def make(author=None, **fields) -> Post:
        fields.setdefault("title", "A post")
        fields.setdefault("body", "Its body.")
        fields.setdefault("status", PostStatus.PUBLISHED)
        return Post.objects.create(author=author or make_user(), **fields)

    return make


@pytest.fixture
def make_posts():
    """`make_posts(author, count, status=..., newest=...)`: `count` posts one second apart, in one insert; returned
    newest first (the order every list uses)."""

    def make(author, count: int, *, status: str = PostStatus.PUBLISHED, newest=None) -> list[Post]:
        newest = newest or timezone.now()
        posts = [
            Post(
                author=author,
                title=f"Post {i}",
                body=f"Body of post {i}.",
                status=status,
                created_at=newest - timedelta(seconds=i),
            )
            for i in range(count)
        ]
        return Post.objects.bulk_create(posts)

    return make


@pytest.fixture
def make_job():
    """`make_job(owner, **fields)`: an export job row, queued unless told otherwise."""
    from posts.models import Job

    def make(owner, **fields) -> Job:
        fields.setdefault("params", {"format": "csv", "scope": "mine"})
        return Job.objects.create(owner=owner, kind=Job.Kind.EXPORT, **fields)

    return make


@pytest.fixture
def broker_tasks():
    """`broker_tasks()`: (task name, args) of each message waiting on the real broker's default queue."""
    import base64
    import json

    import redis
    from django.conf import settings

    def waiting() -> list[tuple[str, list]]:
        # Celery's Redis transport keeps the default queue as a list named "celery" of JSON envelopes whose body
        # is the base64 of [args, kwargs, options].
        broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        envelopes = [json.loads(raw) for raw in broker.lrange("celery", 0, -1)]
        return [(e["headers"]["task"], json.loads(base64.b64decode(e["body"]))[0]) for e in envelopes]

    return waiting


@pytest.fixture
def staff_client(client, make_user):
    """The test client logged in (by session) as a superuser: the admin's console."""
    client.force_login(make_user(is_staff=True, is_superuser=True))
    return client
