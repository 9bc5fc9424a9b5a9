"""Query budgets: what a request costs in SQL does not depend on how many posts it returns. Counted as the server
runs them (count_statements: Django's connections and the event loop's pool alike)."""

import pytest

from accounts.models import User
from posts.models import PostStatus

pytestmark = pytest.mark.django_db(transaction=True)

PAGE_SIZES = [1, 20, 100]


@pytest.fixture
def many_authors(make_posts):
    """150 posts by 15 authors (some drafts), so one query per post or per author would show."""
    # Straight to the table: these authors never log in, so no password hashing (deliberately slow) is needed.
    authors = User.objects.bulk_create(User(username=f"author{n}", email=f"author{n}@example.com") for n in range(15))
    for author in authors:
        make_posts(author, 8)
        make_posts(author, 2, status=PostStatus.DRAFT)
    return authors


# (path, anonymous budget). A bearer token adds one query: authentication loads the user.
LISTS = [
    ("/api/v1/posts/?per_page={size}", 2),  # count, page
    ("/api/v1/posts/?per_page={size}&search=post", 2),
    ("/api/v2/posts?limit={size}", 1),  # page (one row more than asked, to know whether there is a next)
    ("/api/v2/posts?limit={size}&status=published&search=body", 1),
]


@pytest.mark.parametrize("viewer", ["anonymous", "author with drafts"])
@pytest.mark.parametrize(("path", "budget"), LISTS)
def test_list_budget_does_not_depend_on_page_size(
    client, many_authors, bearer, count_statements, path, budget, viewer
):
    headers = bearer(many_authors[0]) if viewer != "anonymous" else {}
    budget += 1 if headers else 0
    for size in PAGE_SIZES:
        with count_statements() as counted:
            response = client.get(path.format(size=size), headers=headers)
        assert counted.total == budget
        assert response.status_code == 200
        assert len(response.json()["items"]) == size


def test_author_posts_budget(client, make_user, make_posts, count_statements):
    author = make_user()
    make_posts(author, 120)
    for index, size in enumerate(PAGE_SIZES):
        # The author, count, page; after the first request the author's profile comes from the cache.
        with count_statements() as counted:
            response = client.get(f"/api/v1/authors/{author.pk}/posts?per_page={size}")
        assert counted.total == (3 if index == 0 else 2)
        assert len(response.json()["items"]) == size


def test_first_pages_of_public_lists_come_from_the_cache(client, many_authors, count_statements):
    for path in ("/api/v1/posts/?per_page=7", "/api/v2/posts?limit=7", f"/api/v1/posts/?author={many_authors[3].pk}"):
        first = client.get(path)
        with count_statements() as counted:
            assert client.get(path).json() == first.json()
        assert counted.total == 0


def test_detail_costs_one_query_then_none(client, make_post, count_statements):
    post = make_post()
    with count_statements() as first:
        assert client.get(f"/api/v1/posts/{post.pk}").status_code == 200
    with count_statements() as second:
        assert client.get(f"/api/v2/posts/{post.pk}").status_code == 200
    assert (first.total, second.total) == (1, 0)


def test_large_totals_are_counted_once_then_cached_briefly(
    client, settings, make_user, make_posts, bearer, count_statements
):
    settings.POSTS_EXACT_COUNT_LIMIT = 5
    author = make_user()
    make_posts(author, 8)
    # Authenticated, so the page itself is not served from the list cache.
    headers = bearer(author)
    with count_statements() as first:
        assert client.get("/api/v1/posts/?per_page=2", headers=headers).json()["pagination"]["total"] == 8
    with count_statements() as second:
        assert client.get("/api/v1/posts/?per_page=2&page=2", headers=headers).json()["pagination"]["total"] == 8
    # auth + capped count + exact count + page, then auth + page.
    assert (first.total, second.total) == (4, 2)
    make_posts(author, 1)
    # Up to POSTS_COUNT_CACHE_SECONDS behind for large totals: the documented trade-off.
    assert client.get("/api/v1/posts/?per_page=2", headers=headers).json()["pagination"]["total"] == 8
