"""fastpath.db's reads on the event loop give exactly the rows Django's ORM gives, values and types alike.

In-process tests normally take the ORM path (fastpath.db._native is false under Django's test environment, where
uncommitted test data would be invisible to the pool): here the data is committed (transactional_db) and the
pool's path is taken on purpose.
"""

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.pq import Format

from accounts.models import User
from accounts.selectors import PUBLIC_USER_FIELDS
from fastpath import db as adb
from posts.models import Post, PostStatus
from posts.selectors import _COLUMNS, _NEWEST_FIRST

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=[True, False], ids=["prepared", "unprepared"])
async def event_loop_pool(request, monkeypatch, settings):
    """The pool's path, with the hot reads as prepared statements (binary rows) and without."""
    settings.DB_PREPARED_STATEMENTS = request.param
    monkeypatch.setattr(adb, "_native", lambda: True)
    yield
    await adb._pool().close()


@pytest.fixture
def seeded() -> dict:
    """Committed rows, and what the ORM reads of them (here, in the test's thread: its connection is the test's)."""
    author = User.objects.create_user(username="adb-author", email="a@example.com", display_name="Ädb Author")
    created = datetime(2026, 3, 29, 1, 30, 0, 123456, tzinfo=UTC)
    posts = [
        Post(author=author, title=f"p{i}", body="é" * (i + 1), status=PostStatus.PUBLISHED, created_at=created)
        for i in range(3)
    ]
    Post.objects.bulk_create(posts)
    # One timestamp without microseconds, one far from today.
    Post.objects.filter(pk=posts[1].pk).update(created_at=datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC))
    Post.objects.filter(pk=posts[2].pk).update(updated_at=created + timedelta(days=3650))
    return {
        "author_id": author.pk,
        "posts": list(Post.objects.filter(author_id=author.pk).order_by(*_NEWEST_FIRST).values(*_COLUMNS)),
        "user": User.objects.filter(pk=author.pk).values(*PUBLIC_USER_FIELDS).get(),
    }


async def test_rows_and_their_types_are_the_orm_s(seeded, event_loop_pool):
    author_id = seeded["author_id"]
    rows = await adb.values(Post.objects.filter(author_id=author_id).order_by(*_NEWEST_FIRST).values(*_COLUMNS))
    assert rows == seeded["posts"]
    for row, orm_row in zip(rows, seeded["posts"], strict=True):
        for name in ("created_at", "updated_at"):
            assert row[name].tzinfo is UTC is orm_row[name].tzinfo
            assert row[name].isoformat() == orm_row[name].isoformat()
    user = await adb.first(User.objects.filter(pk=author_id).values(*PUBLIC_USER_FIELDS))
    assert user == seeded["user"]
    assert user["date_joined"].tzinfo is UTC


async def test_prepared_queries_give_the_same_rows_for_every_argument(seeded, event_loop_pool):
    author_id = seeded["author_id"]
    by_author = adb.Prepared(lambda pk: Post.objects.filter(author_id=pk).order_by(*_NEWEST_FIRST).values(*_COLUMNS))
    page = adb.Prepared(
        lambda offset, limit: Post.objects.order_by(*_NEWEST_FIRST).values("id")[offset : offset + limit], arity=2
    )
    assert await by_author.values(author_id) == seeded["posts"]
    assert await by_author.values(author_id + 1000) == []
    ids = [row["id"] for row in seeded["posts"]]
    assert [row["id"] for row in await page.values(1, 2)] == ids[1:3]
    assert await adb.count(Post.objects.filter(author_id=author_id)) == 3


def test_timestamps_are_parsed_by_psycopg_s_own_loader_in_utc():
    django_adapters = adb._wrapper().get_connection_params()["context"]
    oid = psycopg.adapters.types["timestamptz"].oid
    assert django_adapters.get_loader(oid, Format.TEXT) is not psycopg.adapters.get_loader(oid, Format.TEXT)
    adapters = adb._adapters(adb._wrapper(), django_adapters)
    assert adapters.get_loader(oid, Format.TEXT) is psycopg.adapters.get_loader(oid, Format.TEXT)
    # Django's own map, shared by its connections, is left as it was.
    assert django_adapters.get_loader(oid, Format.TEXT) is not adapters.get_loader(oid, Format.TEXT)
