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
