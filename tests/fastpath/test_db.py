"""fastpath.db: the async ORM's reads on the event loop's pool give exactly what Django's own async ORM gives.

Each test marks its loop as one that serves (what the layer's ASGI application does for a server's loop), compares
the layer's answer with the ORM's (read in the test's thread), and checks on the pool's own counter that the read
did run there, or, where the layer must step aside, that it did not.
"""

import copy
import pickle
from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import sync_to_async
from django.core.exceptions import FieldError
from django.db import DataError
from django.db.models import Q

from accounts.models import User
from accounts.selectors import PUBLIC_USER_FIELDS
from chat.models import Message, Room
from fastpath import db as loop_db
from posts.models import Post, PostStatus
from posts.selectors import _COLUMNS, _NEWEST_FIRST

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=[True, False], ids=["server-bound", "client-bound"])
async def serving(request, settings):
    """This test's loop as a server's, with statements bound by the server (psycopg prepares the frequent ones) or
    by the client as Django binds them."""
    settings.DB_PREPARED_STATEMENTS = request.param
    loop_db.serve_on_this_loop()
    yield
    await loop_db.close_pool()


def pool_requests() -> int:
    import asyncio

    pool = loop_db._serving.get(asyncio.get_running_loop())
    return 0 if pool is None else pool.get_stats().get("requests_num", 0)


@pytest.fixture
def seeded() -> dict:
    author = User.objects.create_user(username="loop-author", email="a@example.com", display_name="Lööp Author")
    other = User.objects.create_user(username="loop-other", email="o@example.com")
    created = datetime(2026, 3, 29, 1, 30, 0, 123456, tzinfo=UTC)
    posts = Post.objects.bulk_create(
        Post(author=author, title=f"p{i}", body="é" * (i + 1), status=PostStatus.PUBLISHED, created_at=created)
        for i in range(3)
    )
    Post.objects.create(author=other, title="draft", status=PostStatus.DRAFT)
    # One timestamp without microseconds, one far from today.
    Post.objects.filter(pk=posts[1].pk).update(created_at=datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC))
    Post.objects.filter(pk=posts[2].pk).update(updated_at=created + timedelta(days=3650))
    room = Room.objects.create(slug="general", name="General")
    Message.objects.bulk_create(
        Message(room=room, user=author, text=f"m{i}", client_id=f"00000000-0000-0000-0000-00000000000{i}")
        for i in range(3)
    )
    return {"author": author, "other": other, "room": room}


def orm(build):
    """What the ORM gives for a queryset (evaluated in a thread, on Django's own connection)."""
    return sync_to_async(lambda: build())()


def fields_of(instance) -> dict:
    return {field.attname: getattr(instance, field.attname) for field in type(instance)._meta.concrete_fields}


async def test_values_rows_and_their_types_are_the_orm_s(seeded, serving):
    author_id = seeded["author"].pk
    expected = await orm(
        lambda: list(Post.objects.filter(author_id=author_id).order_by(*_NEWEST_FIRST).values(*_COLUMNS))
    )
    before = pool_requests()
    rows = [row async for row in Post.objects.filter(author_id=author_id).order_by(*_NEWEST_FIRST).values(*_COLUMNS)]
    assert pool_requests() == before + 1
    assert rows == expected
    assert [[type(value) for value in row.values()] for row in rows] == [
        [type(value) for value in row.values()] for row in expected
    ]
    assert all(row["created_at"].tzinfo is UTC for row in rows)


async def test_model_instances_with_select_related_are_the_orm_s(seeded, serving):
    expected = await orm(lambda: list(Post.objects.select_related("author").order_by("id")))
    found = [post async for post in Post.objects.select_related("author").order_by("id")]
    assert [fields_of(post) for post in found] == [fields_of(post) for post in expected]
    assert [fields_of(post.author) for post in found] == [fields_of(post.author) for post in expected]
    assert all(post._state.db == "default" and not post._state.adding for post in found)


async def test_values_list_flat_and_related_managers(seeded, serving):
    room = seeded["room"]
    expected = await orm(lambda: list(room.messages.order_by("-id").values_list("id", flat=True)))
    assert [pk async for pk in room.messages.order_by("-id").values_list("id", flat=True)] == expected
    assert await room.messages.order_by("-id").values_list("id", flat=True).afirst() == expected[0]
    pairs = await orm(lambda: list(Message.objects.values_list("id", "text").order_by("id")))
    assert [pair async for pair in Message.objects.values_list("id", "text").order_by("id")] == pairs


async def test_aget_afirst_acount_aexists(seeded, serving):
    author = seeded["author"]
    user = await User.objects.aget(pk=author.pk)
    assert fields_of(user) == fields_of(author)
    with pytest.raises(User.DoesNotExist):
        await User.objects.aget(pk=10**12)
    with pytest.raises(User.MultipleObjectsReturned):
        await User.objects.aget(username__startswith="loop-")
    row = await User.objects.filter(pk=author.pk).values(*PUBLIC_USER_FIELDS).afirst()
    assert row == await orm(lambda: User.objects.filter(pk=author.pk).values(*PUBLIC_USER_FIELDS).first())
    # Unordered: by primary key, as QuerySet.first() does.
    assert (await User.objects.filter(username__startswith="loop-").afirst()).pk == min(author.pk, seeded["other"].pk)
    assert await Post.objects.filter(pk=10**12).afirst() is None
    published = Post.objects.filter(status=PostStatus.PUBLISHED)
    assert await published.acount() == 3
    assert await published.aexists()
    assert not await Post.objects.filter(title="nothing").aexists()


def statements_of(queryset) -> dict:
    """The statements built so far for a recorded queryset's chain of calls (read -> statement, None: Django's)."""
    return queryset._chain_node.statements


async def test_queries_of_one_shape_compile_once_and_keep_their_own_parameters(seeded, serving):
    posts = await orm(lambda: list(Post.objects.order_by("id")))
    for post in posts:
        found = await Post.objects.filter(pk=post.pk).values(*_COLUMNS).afirst()
        assert found["id"] == post.pk and found["title"] == post.title
    # One chain of calls, one statement for afirst(), whatever the id.
    statements = statements_of(Post.objects.filter(pk=1).values(*_COLUMNS))
    assert list(statements) == ["first"] and statements["first"] is not None
    # Same lookups, other SQL: an IN list's duplicates collapse, a search escapes its wildcards.
    a, b, c = (post.pk for post in posts[:3])
    for ids in ([a, a, b], [a, b, c], [c]):
        assert sorted([post.pk async for post in Post.objects.filter(pk__in=ids)]) == sorted(set(ids))
    for search, expected in (("p%", 0), ("p", 3), ("P1", 1), ("_1", 0)):
        assert await Post.objects.filter(title__icontains=search).acount() == expected
    # A boolean or None is part of the shape: `WHERE is_active` and `WHERE NOT is_active` are two statements.
    await User.objects.filter(pk=seeded["other"].pk).aupdate(is_active=False)
    for active, expected in ((True, 1), (False, 1), (True, 1)):
        assert await User.objects.filter(is_active=active).acount() == expected
    assert await Post.objects.filter(author=None).acount() == 0
    # Every page of one listing is its own statement (LIMIT and OFFSET are written into it), each right.
    for offset in range(3):
        page = [post.pk async for post in Post.objects.order_by("id")[offset : offset + 1]]
        assert page == [posts[offset].pk]
    # A choice (TextChoices) is a constant of the statement, as its value.
    published = Post.objects.filter(status=PostStatus.PUBLISHED).order_by("id")
    assert [post.pk async for post in published] == [post.pk for post in posts[:3]]
    assert statements_of(published)["all"] is not None


async def test_a_value_that_changes_the_sql_takes_django_s_path(seeded, serving):
    # An integer outside the column's range: Django drops the condition (no row, or every row) rather than send it.
    expected = await orm(
        lambda: list(Post.objects.filter(id__gt=-(2**70)).order_by("id").values_list("id", flat=True))
    )
    for _ in range(2):
        assert await Post.objects.filter(pk=2**70).afirst() is None
        assert await Post.objects.filter(pk=2**70).acount() == 0
        ids = [pk async for pk in Post.objects.filter(id__gt=-(2**70)).order_by("id").values_list("id", flat=True)]
        assert ids == expected and len(ids) == 4
    # The same chain with an ordinary value runs on the loop.
    before = pool_requests()
    assert (await Post.objects.filter(pk=expected[0]).afirst()).pk == expected[0]
    assert pool_requests() == before + 1


async def test_errors_come_at_the_call_as_in_django(seeded, serving):
    with pytest.raises(FieldError):
        Post.objects.filter(no_such_field=1)
    with pytest.raises(FieldError):
        Post.objects.values("no_such_field")
    with pytest.raises(TypeError):
        Post.objects.order_by("id")[:2].filter(pk=1)
    with pytest.raises(TypeError):
        Post.objects.order_by("id")[:2].order_by("title")
    # A value Django converts (a numeric string for an integer column) is not stood in for, and still works.
    first = await seeded["author"].posts.afirst()
    assert (await Post.objects.filter(pk=str(first.pk)).afirst()) == first


def test_a_recorded_queryset_is_django_s_everywhere_else(seeded):
    """Built on first need (its query, a sync read, a copy, a pickle), a recorded queryset is the one Django builds."""
    author = seeded["author"]
    recorded = Post.objects.values(*_COLUMNS).filter(author_id=author.pk).order_by("id")[:2]
    assert recorded._unbuilt
    assert list(recorded) == list(Post.objects.values(*_COLUMNS).filter(author_id=author.pk).order_by("id")[:2].all())
    again = Post.objects.values(*_COLUMNS).filter(author_id=author.pk).order_by("id")[:2]
    assert again.count() == 2 and again.exists() and len(again) == 2
    ids = sorted(Post.objects.filter(author=author).values_list("pk", flat=True))
    assert [
        row["id"] for row in copy.deepcopy(Post.objects.filter(author_id=author.pk).order_by("id")).values()
    ] == ids
    assert [row["id"] for row in recorded] == ids[:2]
    assert sorted(post.pk for post in pickle.loads(pickle.dumps(Post.objects.filter(author_id=author.pk)))) == ids
    # Related managers keep their own filters (Django's path).
    assert sorted(post.pk for post in author.posts.all()) == ids
    # What Django changes in place on one queryset (routing hints) stays with it.
    hinted = Post.objects.filter(author_id=author.pk)
    hinted._add_hints(instance=author)
    assert Post.objects.filter(author_id=author.pk)._hints == {}
    assert sorted(post.pk for post in hinted.filter(status=PostStatus.PUBLISHED)) == ids


async def test_a_query_that_cannot_match_costs_no_round_trip(seeded, serving):
    before = pool_requests()
    assert [post async for post in Post.objects.filter(pk__in=[])] == []
    assert await Post.objects.filter(pk__in=[]).acount() == 0
    assert pool_requests() == before


async def test_what_the_layer_does_not_reproduce_goes_to_django(seeded, serving):
    author_id = seeded["author"].pk
    before = pool_requests()
    # prefetch_related, a distinct count: Django's own async methods.
    authors = [user async for user in User.objects.filter(pk=author_id).prefetch_related("posts")]
    assert len(authors[0].posts.all()) == 3
    assert await Post.objects.values("author_id").distinct().acount() == 2
    assert pool_requests() == before
    # A slice counts only its rows, on the loop as in Django.
    assert await Post.objects.order_by("id")[:2].acount() == 2
    assert await Post.objects.order_by("id")[3:10].acount() == 1
    assert pool_requests() == before + 2


async def test_without_a_serving_loop_or_with_the_layer_off_reads_take_django_s_path(seeded, settings):
    # No serve_on_this_loop(): this loop is one a test (or async_to_sync) made, so no pool is opened for it.
    assert await Post.objects.acount() == 4
    assert pool_requests() == 0
    loop_db.serve_on_this_loop()
    settings.FAST_PATH = False
    try:
        assert await Post.objects.acount() == 4
        assert pool_requests() == 0
    finally:
        await loop_db.close_pool()


async def test_driver_errors_come_out_as_django_s(seeded, serving):
    before = pool_requests()
    with pytest.raises(DataError):
        # PostgreSQL refuses it at run time (division by zero): Django's DataError, as from the ORM's own path.
        [post async for post in Post.objects.extra(where=["1 / (id - id) = 1"])]
    assert pool_requests() == before + 1


def _sql(queryset) -> tuple:
    return queryset.query.sql_with_params()


FILTERS = [
    lambda: (Post.objects, {"pk": 7}),
    lambda: (Post.objects, {"status": PostStatus.PUBLISHED, "author__username": "loop-author"}),
    lambda: (Post.objects.values(*_COLUMNS), {"pk": 123456789012}),
    lambda: (Post.objects.order_by(*_NEWEST_FIRST).values(*_COLUMNS), {"title__icontains": "50%_off"}),
    lambda: (Post.objects, {"created_at__lte": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), "author_id": 3}),
    lambda: (Post.objects, {"author": None}),
    lambda: (User.objects.filter(is_active=True), {"pk": 5, "is_staff": False}),
    lambda: (Post.objects.select_related("author").only("title", "author__username"), {"title__startswith": "p"}),
    lambda: (Post.objects.filter(status=PostStatus.PUBLISHED), {"created_at__lt": datetime(2026, 1, 1, tzinfo=UTC)}),
]


@pytest.mark.parametrize("case", range(len(FILTERS)))
def test_a_filter_made_from_its_template_is_the_filter_django_makes(case, settings):
    source, lookups = FILTERS[case]()
    for attempt in range(3):
        # The first call builds the template; the next ones apply it, with other values of the same types.
        varied = {name: value + attempt if type(value) is int else value for name, value in lookups.items()}
        settings.FAST_PATH = True
        fast = source.filter(**varied)
        settings.FAST_PATH = False
        assert _sql(fast) == _sql(source.filter(**varied))
    settings.FAST_PATH = True
    either = Q(title__icontains="a") | Q(created_at__lt=datetime(2026, 1, 1, tzinfo=UTC), id__lt=9)
    for search in ("a", "b_%"):
        node = Q(title__icontains=search) | Q(created_at__lt=datetime(2026, 1, 1, tzinfo=UTC), id__lt=9)
        fast = Post.objects.filter(either).filter(node)
        settings.FAST_PATH = False
        assert _sql(fast) == _sql(Post.objects.filter(either).filter(node))
        settings.FAST_PATH = True


CHAINS = [
    lambda pk: Post.objects.values(*_COLUMNS).order_by(*_NEWEST_FIRST).filter(author_id=pk)[20:40],
    lambda pk: Post.objects.all().filter(Q(status=PostStatus.PUBLISHED) | Q(author_id=pk)).order_by()[: pk + 1],
    lambda pk: User.objects.filter(is_active=True).only("id", "username").order_by("id").filter(pk__gte=pk)[pk:],
    lambda pk: Message.objects.select_related("user", "room").filter(room_id=pk).filter(id__gt=pk).order_by("id"),
]


@pytest.mark.parametrize("case", range(len(CHAINS)))
def test_a_recorded_chain_builds_the_query_django_builds(case, settings):
    for pk in (3, 4, 3):
        settings.FAST_PATH = True
        recorded = CHAINS[case](pk)
        assert recorded._unbuilt
        settings.FAST_PATH = False
        assert _sql(recorded) == _sql(CHAINS[case](pk))


async def test_filters_made_from_templates_read_the_rows_django_reads(seeded, serving):
    author = seeded["author"]
    for _ in range(2):
        for post in await orm(lambda: list(Post.objects.order_by("id"))):
            found = await Post.objects.values(*_COLUMNS).filter(pk=post.pk).afirst()
            assert found["id"] == post.pk
        assert await Post.objects.filter(author_id=author.pk, status=PostStatus.PUBLISHED).acount() == 3
        assert await Post.objects.filter(author_id=seeded["other"].pk, status=PostStatus.PUBLISHED).acount() == 0
        assert await Post.objects.filter(author__username="loop-other").acount() == 1
