"""The posts admin: staff find posts by status, date and text, and publish or unpublish them in bulk; every change
made there reaches API clients at once, like a change made through the API."""

import pytest
from django.urls import reverse

from posts.models import Post, PostStatus

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = reverse("admin:posts_post_changelist")


def test_changelist_filters_and_searches(staff_client, make_user, make_post):
    author = make_user(username="writer")
    make_post(author, title="Postgres notes", status=PostStatus.DRAFT)
    make_post(author, title="Redis notes")
    page = staff_client.get(CHANGELIST).content.decode()
    assert "Postgres notes" in page and "Redis notes" in page
    drafts = staff_client.get(CHANGELIST, {"status__exact": "draft"}).content.decode()
    assert "Postgres notes" in drafts and "Redis notes" not in drafts
    found = staff_client.get(CHANGELIST, {"q": "redis"}).content.decode()
    assert "Redis notes" in found and "Postgres notes" not in found
    by_author = staff_client.get(CHANGELIST, {"q": "writer"}).content.decode()
    assert "Redis notes" in by_author and "Postgres notes" in by_author


def test_the_author_is_a_raw_id_field(staff_client, make_post):
    post = make_post()
    form = staff_client.get(reverse("admin:posts_post_change", args=[post.pk])).content.decode()
    assert 'class="vForeignKeyRawIdAdminField"' in form


@pytest.mark.parametrize(
    ("action", "before", "after"), [("publish", "draft", "published"), ("unpublish", "published", "draft")]
)
def test_bulk_actions_change_the_status_and_api_clients_see_it(
    client, staff_client, make_user, make_post, action, before, after
):
    author = make_user()
    posts = [make_post(author, title=f"p{n}", status=before) for n in range(3)]
    untouched = make_post(author, title="other", status=before)
    # Warm the caches the action has to refresh.
    client.get("/api/v1/posts/")
    for post in posts:
        client.get(f"/api/v1/posts/{post.pk}")

    response = staff_client.post(
        CHANGELIST, {"action": action, "_selected_action": [p.pk for p in posts]}, follow=True
    )
    assert response.status_code == 200
    assert "3 post(s)" in response.content.decode()
    assert set(Post.objects.filter(pk__in=[p.pk for p in posts]).values_list("status", flat=True)) == {after}
    assert Post.objects.get(pk=untouched.pk).status == before

    client.logout()
    listed = {item["id"] for item in client.get("/api/v1/posts/").json()["items"]}
    for post in posts:
        assert (post.pk in listed) == (after == "published")
        assert client.get(f"/api/v1/posts/{post.pk}").status_code == (200 if after == "published" else 404)


def test_edits_and_deletes_in_the_admin_reach_api_clients(client, staff_client, make_user, make_post):
    author = make_user()
    post = make_post(author, title="Original", body="text")
    assert client.get(f"/api/v1/posts/{post.pk}").json()["title"] == "Original"
    change_url = reverse("admin:posts_post_change", args=[post.pk])
    saved = staff_client.post(
        change_url, {"title": "Edited", "body": "text", "status": "published", "author": author.pk}
    )
    assert saved.status_code == 302
    client.logout()
    assert client.get(f"/api/v1/posts/{post.pk}").json()["title"] == "Edited"

    staff_client.force_login(make_user(is_staff=True, is_superuser=True))
    deleted = staff_client.post(reverse("admin:posts_post_delete", args=[post.pk]), {"post": "yes"})
    assert deleted.status_code == 302
    client.logout()
    assert client.get(f"/api/v1/posts/{post.pk}").status_code == 404
    assert client.get("/api/v1/posts/").json()["items"] == []
