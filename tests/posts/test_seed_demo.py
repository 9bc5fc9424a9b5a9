"""`manage.py seed_demo`: demo users and posts in bulk, safe to run again."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.models import User
from posts.models import Post, PostStatus

pytestmark = pytest.mark.django_db(transaction=True)


def seed(*args) -> str:
    out = StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


def test_seeds_users_and_posts_and_tops_up_when_run_again(client):
    output = seed("--users", "3", "--posts-per-user", "4")
    assert "12/12 posts" in output
    assert User.objects.filter(username__startswith="demo_user_").count() == 3
    assert Post.objects.count() == 12
    assert set(Post.objects.values_list("status", flat=True)) <= {PostStatus.DRAFT, PostStatus.PUBLISHED}

    assert "0 posts created" in seed("--users", "3", "--posts-per-user", "4")
    assert Post.objects.count() == 12

    seed("--users", "4", "--posts-per-user", "5")
    assert User.objects.filter(username__startswith="demo_user_").count() == 4
    counts = {user.pk: user.posts.count() for user in User.objects.filter(username__startswith="demo_user_")}
    assert set(counts.values()) == {5}

    # Demo users can log in with the demo password.
    login = client.post(
        "/api/v1/auth/token",
        {"username": "demo_user_00001", "password": "demo password"},
        content_type="application/json",
    )
    assert login.status_code == 200


def test_seeded_posts_are_served(client):
    seed("--users", "2", "--posts-per-user", "3")
    published = Post.objects.filter(status=PostStatus.PUBLISHED).count()
    assert client.get("/api/v1/posts/").json()["pagination"]["total"] == published


def test_refuses_negative_counts():
    with pytest.raises(CommandError):
        seed("--users", "-1")
