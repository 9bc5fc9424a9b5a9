"""The async ORM's reads on the event loop: a QuerySet whose async terminal methods run on psycopg's async driver.

Django's async ORM (`aget()`, `afirst()`, `async for`) runs every query in a worker thread (`sync_to_async`): a
hand-off to the request's thread and back per query, and the request holds a pooled connection from its first
query until the response is sent. For the hot reads (a post, a user, a page of posts, the user behind a token)
that was most of the request's cost (README, Performance). `LoopQuerySet` keeps the ORM's API and its results:
the queryset is compiled by Django (same SQL, same parameters), the rows are read on a psycopg
`AsyncConnectionPool` of the event loop, and Django's own iterable (`ModelIterable`, `ValuesIterable`, ...) turns
them into what the ORM returns (the same converters, model instances, `select_related` objects). No thread, and the
connection goes back to the pool as soon as the rows are read. Building and compiling a queryset costs more than
running it, so its calls are recorded rather than built, and each chain of calls is built and compiled by Django
once (see "recorded querysets" below).

When a read runs here, and when it goes to Django's own async method instead:
- FAST_PATH on, the database (the "default" alias) is PostgreSQL, and the code runs on an event loop that serves
  requests (marked by the layer's ASGI application, `serve_on_this_loop`): a loop that lives as long as the
  process. Loops made for one call (`async_to_sync` in a command or a task, a test's own loop) keep the ORM's path,
  so no pool is opened for a loop that is about to end.
- The queryset is one these methods reproduce exactly: no `prefetch_related`, no `select_for_update`, no
  combinator (`union`, ...), and for `acount`/`aexists` no distinct or grouping (nor, for `aexists`, a slice).
  Anything else: Django's.
- Code on the event loop can never be inside `atomic()` (Django refuses transactions in async code): writes and
  the reads inside them stay in the services, in the request's thread, on Django's connection.

The pool is sized like Django's (DB_POOL_MIN / DB_POOL_MAX, DB_POOL_TIMEOUT) and configured like its connections
(autocommit, the time zone, Django's adapters, the health check on checkout when CONN_HEALTH_CHECKS is set, skipped
for a connection that completed a query within the last `CHECK_AFTER_IDLE_SECONDS`, as HikariCP's "alive bypass
window" does). With DB_PREPARED_STATEMENTS, statements are bound by the server and prepared on the connection that
first runs them, their rows in binary where every column loads as Django loads it; without, parameters are bound
by the client as Django does.
Errors are Django's (`django.db.OperationalError`, ...). Statements are counted in django-prometheus' database
series and traced like the ORM's own.
"""

import asyncio
import itertools
import math
import time
import uuid
import weakref
from datetime import UTC, date, datetime, timedelta
from datetime import time as time_of_day
from decimal import Decimal
from enum import Enum

import psycopg
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import EmptyResultSet, FullResultSet
from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.models import Q
from django.db.models.expressions import Col
from django.db.models.lookups import BuiltinLookup, In, Lookup, Range
from django.db.models.query import MAX_GET_RESULTS, ValuesIterable
from django.db.models.sql.constants import GET_ITERATOR_CHUNK_SIZE
from django.db.models.sql.where import WhereNode
from django_prometheus.db.metrics import errors_total, execute_total, query_duration_seconds
from opentelemetry.trace import SpanKind
from psycopg import AsyncClientCursor, AsyncConnection, AsyncCursor
from psycopg.adapt import AdaptersMap
from psycopg.pq import Format
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from core.database import outage
from core.tracing import tracer, tracing_enabled

ALIAS = "default"
# A connection whose last query completed less than this long ago is handed out without the health check's probe.
CHECK_AFTER_IDLE_SECONDS = 0.5

_TIMESTAMPTZ_OID = psycopg.adapters.types["timestamptz"].oid
# django-prometheus' series of this alias, labelled once (`labels()` looks them up under a lock every time).
_EXECUTED = execute_total.labels(ALIAS, "postgresql")
_DURATION = query_duration_seconds.labels(ALIAS, "postgresql")

# The loops that serve requests, each with its pool once a read needed one.
_serving: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncConnectionPool | None]" = (
    weakref.WeakKeyDictionary()
)
# Per pool: the reads allowed into it at once (_fetch).
_gates: "weakref.WeakKeyDictionary[AsyncConnectionPool, asyncio.Semaphore]" = weakref.WeakKeyDictionary()
# Compiling needs a DatabaseWrapper (its operations and features), never a connection: one, shared, never connected.
_compiler_connection = None


class OutageReportingAsyncConnection(AsyncConnection):
    """The loop pool's connections: one that cannot be made tells the outage tracker (core/database.py) at once."""

    @classmethod
    async def connect(cls, *args, **kwargs):
        try:
            return await super().connect(*args, **kwargs)
        except psycopg.Error as exc:
            outage.failed(exc)
            raise


def serve_on_this_loop() -> None:
    """Marks the running loop as one that serves requests for the life of the process: its reads may open a pool."""
    loop = asyncio.get_running_loop()
    if loop not in _serving:
        _serving[loop] = None


def _wrapper():
    global _compiler_connection
    if _compiler_connection is None:
        _compiler_connection = connections.create_connection(ALIAS)
    return _compiler_connection


def _pool() -> AsyncConnectionPool:
    loop = asyncio.get_running_loop()
    pool = _serving.get(loop)
    if pool is None:
        wrapper = _wrapper()
        params = wrapper.get_connection_params()
        options = params.pop("pool", None) or {}
        params.pop("cursor_factory", None)
        timezone_name = wrapper.timezone_name

        async def configure(connection: AsyncConnection) -> None:
            await connection.execute("SELECT set_config('TimeZone', %s, false)", [timezone_name])

        if "context" in params:
            params["context"] = _adapters(wrapper, params["context"])
        pool = AsyncConnectionPool(
            kwargs={**params, "cursor_factory": AsyncClientCursor, "autocommit": True},
            min_size=options.get("min_size", settings.DB_POOL_MIN),
            max_size=options.get("max_size", settings.DB_POOL_MAX),
            timeout=options.get("timeout", settings.DB_POOL_TIMEOUT),
            configure=configure,
            check=_check_unless_just_used if wrapper.settings_dict["CONN_HEALTH_CHECKS"] else None,
            connection_class=OutageReportingAsyncConnection,
            open=False,
            name=f"loop-{ALIAS}",
        )
        _serving[loop] = pool
        _gates[pool] = asyncio.Semaphore(pool.max_size)
    return pool


async def close_pool() -> None:
    """Closes the running loop's pool, if it has one; the next read opens a new one (after a database outage;
    tests)."""
    loop = asyncio.get_running_loop()
    pool = _serving.get(loop)
    if pool is not None:
        _serving[loop] = None
        await pool.close()


def _adapters(wrapper, django_adapters: AdaptersMap) -> AdaptersMap:
    """Django's adapters, with psycopg's own timestamptz loader (in C) where it returns what Django's does.

    Django's loader parses each timestamp in Python (a regular expression, then a time zone replaced): a tenth of a
    list page's time. psycopg's returns the same aware datetime, in the session's time zone, which the pool sets
    to Django's (`configure`): for UTC, both give `datetime.UTC` datetimes. Elsewhere Django's loader stays.
    """
    if wrapper.timezone is not UTC or wrapper.timezone_name != "UTC":
        return django_adapters
    adapters = AdaptersMap(django_adapters)
    adapters.register_loader("timestamptz", psycopg.adapters.get_loader(_TIMESTAMPTZ_OID, Format.TEXT))
    return adapters


async def _execute(sql: str, params, *, binary: bool = False) -> list[tuple]:
    if outage.admit():
        # PostgreSQL was down: this read probes with a fresh connection (on a thread: connecting blocks).
        await asyncio.to_thread(outage.probe, _wrapper().get_connection_params())
        # Back: the loop's pool starts afresh, as Django's does (core/postgresql/base.py).
        await close_pool()
    pool = _pool()
    if pool.closed:
        await pool.open()
    _EXECUTED.inc()
    started = time.perf_counter()
    try:
        # Driver errors come out as Django's (django.db.OperationalError, ...), as from the ORM's own path.
        with _wrapper().wrap_database_errors:
            if tracing_enabled():
                attributes = {"db.system": "postgresql", "db.statement": sql}
                with tracer.start_as_current_span(sql.split(None, 1)[0], kind=SpanKind.CLIENT, attributes=attributes):
                    return await _fetch(pool, sql, params, binary)
            return await _fetch(pool, sql, params, binary)
    except Exception as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, psycopg.Error) else exc
        errors_total.labels(ALIAS, "postgresql", type(cause).__name__).inc()
        outage.failed(exc)
        raise
    finally:
        _DURATION.observe(time.perf_counter() - started)


async def _check_unless_just_used(connection: AsyncConnection) -> None:
    """The pool's health check (an empty query), unless the connection just proved itself with a query."""
    if time.monotonic() - getattr(connection, "_loop_used_at", -math.inf) < CHECK_AFTER_IDLE_SECONDS:
        return
    await AsyncConnectionPool.check_connection(connection)


async def _fetch(pool: AsyncConnectionPool, sql: str, params, binary: bool) -> list[tuple]:
    # At most max_size reads inside the pool at once; the others queue here, on a semaphore, where waiting costs a
    # future: in the pool, each waiter costs a condition and a `wait_for` task (in the profile under 50 concurrent
    # reads on 10 connections, a few percent of a single-row read). The wait is bounded by the pool's timeout.
    gate = _gates[pool]
    if gate.locked():
        try:
            async with asyncio.timeout(pool.timeout):
                await gate.acquire()
        except TimeoutError:
            raise PoolTimeout(f"couldn't get a connection after {pool.timeout:.2f} sec") from None
    else:
        await gate.acquire()
    try:
        async with pool.connection() as connection:
            if settings.DB_PREPARED_STATEMENTS:
                # Parameters bound by the server, the statement prepared on this connection (PostgreSQL parses and
                # plans it once; psycopg keeps the connection's `prepared_max` most recent ones), and rows in binary
                # where every column's binary loader gives what Django's gives (_binary_rows).
                async with AsyncCursor(connection) as cursor:
                    await cursor.execute(sql, params, prepare=True, binary=binary)
                    rows = await cursor.fetchall()
            else:
                async with connection.cursor() as cursor:
                    await cursor.execute(sql, params)
                    rows = await cursor.fetchall()
            connection._loop_used_at = time.monotonic()
            return rows
    finally:
        gate.release()


class _FetchedCompiler:
    """A compiled query whose rows were already read: Django's iterables call `execute_sql` / `results_iter` on
    their compiler, and get these rows, converted by the real compiler as it would convert its own."""

    def __init__(self, compiler, rows: list[tuple]) -> None:
        self.compiler = compiler
        self.rows = rows

    def execute_sql(self, *args, **kwargs):
        return [self.rows]

    def results_iter(self, results=None, tuple_expected=False, **kwargs):
        """SQLCompiler.results_iter over the fetched rows, with the compiler's converters found once per compiled
        statement rather than per read."""
        compiler = self.compiler
        converters = compiler.__dict__.get("_loop_converters")
        if converters is None:
            fields = [selected[0] for selected in compiler.select[0 : compiler.col_count]]
            if compiler.has_composite_fields(fields):
                return compiler.results_iter([self.rows] if results is None else results, tuple_expected, **kwargs)
            converters = compiler._loop_converters = compiler.get_converters(fields)
        rows = self.rows if results is None else itertools.chain.from_iterable(results)
        if converters:
            rows = compiler.apply_converters(rows, converters)
        return map(tuple, rows) if tuple_expected else rows

    def __getattr__(self, name: str):
        return getattr(self.compiler, name)


class _Unparameterized(Exception):
    """A WHERE clause with a part whose SQL could depend on more than the types of its values."""


# Values whose SQL is a placeholder whatever the value (booleans and None are part of the shape instead).
_PLAIN_VALUES = {int, str, float, datetime, date, time_of_day, Decimal, uuid.UUID}


def _plain_choice(value) -> bool:
    return isinstance(value, Enum) and isinstance(value, str | int) and not isinstance(value, bool)


def _where_leaves(node, leaves: list) -> list:
    """The lookups of a WHERE tree in the order their SQL and parameters come. Raises _Unparameterized for anything
    but built-in lookups comparing a column with a plain value (or a boolean, or None)."""
    if isinstance(node, WhereNode):
        for child in node.children:
            _where_leaves(child, leaves)
        return leaves
    if isinstance(node, BuiltinLookup) and type(node.lhs) is Col and not isinstance(node, In | Range):
        rhs = node.rhs
        # A choice (TextChoices, IntegerChoices) is its value, a str or int, as far as its SQL goes.
        if type(rhs) in _PLAIN_VALUES or rhs is None or type(rhs) is bool or _plain_choice(rhs):
            leaves.append(node)
            return leaves
    raise _Unparameterized


def _leaf_parameters(leaf, compiler) -> list:
    """A lookup's parameters as Django's `as_sql` gives them, for the lookups _where_leaves accepts: none for IS
    NULL or a boolean column tested as such, else its right-hand side's. Raises EmptyResultSet or FullResultSet as
    Django does where the value decides the condition (an integer outside its column's range)."""
    if leaf.rhs is None or type(leaf.rhs) is bool:
        return []
    return list(leaf.process_rhs(compiler, compiler.connection)[1])


# Fields whose columns psycopg's binary loaders read as Django's text loaders do (numbers, text, booleans, dates
# and times in the session's time zone, UUIDs). Not JSON or network addresses: Django loads those as text.
_BINARY_SAFE_FIELDS = {
    "AutoField",
    "BigAutoField",
    "SmallAutoField",
    "IntegerField",
    "BigIntegerField",
    "SmallIntegerField",
    "PositiveIntegerField",
    "PositiveBigIntegerField",
    "PositiveSmallIntegerField",
    "BooleanField",
    "CharField",
    "TextField",
    "SlugField",
    "EmailField",
    "URLField",
    "FileField",
    "DateTimeField",
    "DateField",
    "UUIDField",
    "ForeignKey",
    "OneToOneField",
}


def _binary_rows(compiler) -> bool:
    """Whether a compiled statement's rows may come in binary (decoded in C): every selected column is of a field
    listed above."""
    selected = [expression for expression, *_ in compiler.select[0 : compiler.col_count]]
    return all(
        getattr(getattr(expression, "output_field", None), "get_internal_type", str)() in _BINARY_SAFE_FIELDS
        for expression in selected
    )


class _FetchedQuery:
    """A queryset's query whose compiler is one over rows already read (what Django's iterables ask for)."""

    __slots__ = ("_compiler", "_query")

    def __init__(self, query, compiler: _FetchedCompiler) -> None:
        self._query = query
        self._compiler = compiler

    def get_compiler(self, *args, **kwargs) -> _FetchedCompiler:
        return self._compiler

    def __getattr__(self, name: str):
        return getattr(self._query, name)


def _results(queryset, compiler, rows: list[tuple]) -> list:
    """What `list(queryset)` gives when the rows of its compiled query are `rows`: Django's own iterable of the
    queryset (ModelIterable, ValuesIterable, ...) run over them, on a copy of the queryset whose query hands out
    the fetched rows' compiler."""
    view = object.__new__(type(queryset))
    view.__dict__.update(queryset.__dict__)
    view._query = _FetchedQuery(queryset._query, _FetchedCompiler(compiler, rows))
    return list(queryset._iterable_class(view, chunked_fetch=False, chunk_size=GET_ITERATOR_CHUNK_SIZE))


async def _evaluate(queryset) -> list:
    """What `list(queryset)` gives, read on the loop: compiled by Django for this call."""
    compiler = queryset.query.get_compiler(connection=_wrapper())
    try:
        sql, params = compiler.as_sql()
    except EmptyResultSet:
        return []
    rows = await _execute(sql, params, binary=_binary_rows(compiler)) if sql else []
    return _results(queryset, compiler, rows)


async def _count(queryset) -> int:
    try:
        sql, params = queryset.values("pk").query.get_compiler(connection=_wrapper()).as_sql()
    except EmptyResultSet:
        return 0
    rows = await _execute(f"SELECT COUNT(*) FROM ({sql}) subquery", params, binary=True)
    return rows[0][0]


# --- recorded querysets ---------------------------------------------------------------------------------------
#
# Building a queryset (resolving names, joins and lookups) and compiling it cost more than running it: most of a
# single-row read's time. But the SQL of `Post.objects.values(...).filter(pk=x).afirst()` depends only on the
# calls made and the types of their values, not on `x`. So LoopQuerySet records its calls instead of building
# them: each chain of calls from a model's fresh queryset is a node of a tree (_Node), built by Django once with
# a stand-in for each value; each way of reading a node (`afirst()`, `async for`, `acount()`, ...) is compiled by
# Django once (_Statement), with where its parameters come from. A read then runs that statement with the real
# values, each prepared by a lookup Django makes for it, and Django's iterable turns its rows into the results.
# Anything else asked of a recorded queryset (its `query`, a call not recorded, a sync read) first builds it as
# Django would have: the node's query with the real values put back in their lookups.

# Values that can be stood in for while a node is built: a unique value of the same type each.
_STAND_IN_TYPES = {int, str, datetime}
_STAND_IN_EPOCH = datetime(1971, 2, 3, 4, 5, 6, tzinfo=UTC)
# Per node, the calls after it kept; past this many (a listing's every page is a call of its own), they start over.
CHILDREN_KEPT = 256
# Not built yet (None: cannot be).
_UNBUILT = object()


def _stand_in(kind: type, index: int):
    if kind is int:
        return 1_900_000_000 + index
    if kind is str:
        return f"fastpath-stand-in-{index}"
    return _STAND_IN_EPOCH + timedelta(microseconds=index + 1)


def _filter_shape(node, values: list):
    """The shape of a filter's arguments (lookups, connectors, the type of each value) with its values taken out
    into `values` in order, or None when a value is of a kind that cannot be stood in for (a model, a list, an
    expression: those keep Django's path)."""
    if isinstance(node, Q):
        shapes = tuple(_filter_shape(child, values) for child in node.children)
        return None if None in shapes else (node.connector, node.negated, shapes)
    if type(node) is tuple and len(node) == 2 and type(node[0]) is str:
        name, value = node
        if type(value) in _STAND_IN_TYPES:
            values.append(value)
            return (name, type(value))
        if value is None or type(value) is bool or isinstance(value, Enum):
            # Part of the shape itself: None and booleans change the lookup, a choice is a constant of the code.
            return (name, "constant", value)
    return None


def _kwargs_with(kwargs: dict, stand_ins: list) -> dict:
    """Keyword arguments of a filter with the stand-ins in place of the values _filter_shape took out."""
    values = iter(stand_ins)
    return {name: next(values) if type(value) in _STAND_IN_TYPES else value for name, value in kwargs.items()}


def _with_values(node, values):
    """The filter's arguments again, with `values` (an iterator) in place of the ones _filter_shape took out."""
    if isinstance(node, Q):
        return Q(
            *(_with_values(child, values) for child in node.children), _connector=node.connector, _negated=node.negated
        )
    name, value = node
    return (name, next(values)) if type(value) in _STAND_IN_TYPES else node


def _stand_in_index(stand_ins: tuple) -> dict:
    """Each stand-in's position, by type and value (a stand-in equals no value of another type)."""
    return {(type(stand_in), stand_in): index for index, stand_in in enumerate(stand_ins)}


def _stand_in_paths(where, stand_ins: tuple) -> list[tuple] | None:
    """Where in the WHERE tree each stand-in is the value of a lookup (child indexes from the root), or None when
    one is not found exactly once."""
    index_of = _stand_in_index(stand_ins)
    found: dict[int, tuple] = {}

    def visit(node, path):
        for position, child in enumerate(node.children):
            if isinstance(child, WhereNode):
                if not visit(child, (*path, position)):
                    return False
            elif isinstance(child, Lookup):
                try:
                    index = index_of.get((type(child.rhs), child.rhs))
                except TypeError:  # an unhashable value: never a stand-in
                    continue
                if index is not None:
                    if index in found:
                        return False
                    found[index] = (*path, position)
        return True

    if not visit(where, ()) or len(found) != len(stand_ins):
        return None
    return [found[index] for index in range(len(stand_ins))]


class _Node:
    """A chain of recorded calls from a model's fresh queryset: the queryset Django built for it with stand-ins for
    its values (never handed out), where each stand-in sits in its WHERE tree, the chains that continue it and
    the statements that read it."""

    __slots__ = ("children", "paths", "queryset", "stand_in_index", "stand_ins", "statements")

    def __init__(self, queryset, stand_ins: tuple, paths: list[tuple]) -> None:
        self.queryset = queryset
        self.stand_ins = stand_ins
        self.stand_in_index = _stand_in_index(stand_ins)
        self.paths = paths
        self.children: dict = {}
        self.statements: dict = {}

    @classmethod
    def root(cls, model, using) -> "_Node":
        node = _roots.get((model, using))
        if node is None:
            queryset = LoopQuerySet(model=model, using=using)
            queryset._root_key = None  # the node's own: never recorded from
            node = _roots.setdefault((model, using), cls(queryset, (), []))
        return node

    def then(self, call: tuple, values: list, apply) -> "_Node | None":
        """The node after `call` (hashable: its name and the shape of its arguments, the types of `values`
        included), built the first time by `apply(queryset, stand_ins)` with Django's own method; None when it
        cannot be recorded."""
        child = self.children.get(call, _UNBUILT)
        if child is _UNBUILT:
            if len(self.children) >= CHILDREN_KEPT:
                self.children.clear()
            child = self.children[call] = self._build(values, apply)
        return child

    def _build(self, values: list, apply) -> "_Node | None":
        start = len(self.stand_ins)
        stand_ins = (*self.stand_ins, *(_stand_in(type(value), start + index) for index, value in enumerate(values)))
        try:
            queryset = apply(self.queryset, list(stand_ins[start:]))
        except Exception:
            # Whatever Django raises, it raises again on the real call, which takes Django's path.
            return None
        if type(queryset) is not type(self.queryset) or queryset._result_cache is not None:
            return None
        paths = _stand_in_paths(queryset.query.where, stand_ins) if stand_ins else []
        return None if paths is None else _Node(queryset, stand_ins, paths)

    def pending(self, values: tuple):
        """A queryset of this node with these values, not built."""
        queryset = object.__new__(type(self.queryset))
        queryset.__dict__.update(self.queryset.__dict__)
        # Dicts Django may change in place (_add_hints, _merge_known_related_objects): this queryset's own.
        queryset._hints = {}
        queryset._known_related_objects = {}
        queryset._chain_node = self
        queryset._chain_values = values
        queryset._unbuilt = True
        return queryset

    def build(self, values: tuple):
        """The query Django would have built with these values: the node's, each stand-in's lookup made again with
        its value."""
        query = self.queryset.query.chain()
        for path, value in zip(self.paths, values, strict=True):
            parent = query.where
            for index in path[:-1]:
                parent = parent.children[index]
            leaf = parent.children[path[-1]]
            parent.children[path[-1]] = type(leaf)(leaf.lhs, value)
        return query

    def statement(self, read: str) -> "_Statement | None":
        statement = self.statements.get(read, _UNBUILT)
        if statement is _UNBUILT:
            statement = self.statements[read] = _Statement.build(self, read)
        return statement


# A model's fresh queryset (Model.objects) per (model, database alias): where every chain starts.
_roots: dict[tuple, _Node] = {}


class _Statement:
    """One way of reading a node, compiled by Django: its SQL, and per lookup of its WHERE clause (in the order of
    their parameters) which value it takes, or its own constant parameters."""

    __slots__ = ("binary", "compiler", "converters", "names", "plan", "queryset", "sql")

    def __init__(self, queryset, compiler, sql: str, plan: list[tuple]) -> None:
        self.queryset = queryset
        self.compiler = compiler
        self.sql = sql
        self.plan = plan
        self.binary = _binary_rows(compiler)
        # values() rows: the dicts ValuesIterable makes, made here with its names and the compiler's converters
        # found once (the iterable finds both on every read).
        self.names = self.converters = None
        query = queryset.query
        fields = [selected[0] for selected in compiler.select[0 : compiler.col_count]]
        if queryset._iterable_class is ValuesIterable and not compiler.has_composite_fields(fields):
            self.names = tuple(query.selected or (*query.extra_select, *query.values_select, *query.annotation_select))
            self.converters = compiler.get_converters(fields)

    @classmethod
    def build(cls, node: _Node, read: str) -> "_Statement | None":
        """`read` as Django's QuerySet does it: "all" (`list()`), "first" (`first()`: by primary key when
        unordered, one row), "get" (unordered, at most MAX_GET_RESULTS rows), "count" (COUNT(*) over the rows, the
        slice included), "exists" (one primary key). None for what these cannot reproduce (prefetches, locks,
        combinators; distinct or grouped counts) or whose parameters do not all come from its lookups."""
        queryset = node.queryset
        query = queryset.query
        if queryset._prefetch_related_lookups or query.select_for_update or query.combinator:
            return None
        try:
            if read == "first":
                if not queryset.ordered:
                    queryset._check_ordering_first_last_queryset_aggregation(method="first")
                    queryset = models.QuerySet.order_by(queryset, "pk")
                queryset = models.QuerySet.__getitem__(queryset, slice(None, 1))
            elif read == "get":
                if query.can_filter() and not query.distinct_fields:
                    queryset = models.QuerySet.order_by(queryset)
                queryset = queryset._chain()
                queryset.query.set_limits(high=MAX_GET_RESULTS)
            elif read in ("count", "exists"):
                if query.distinct or query.group_by is not None or (read == "exists" and query.is_sliced):
                    return None
                if read == "exists":
                    queryset = models.QuerySet.__getitem__(models.QuerySet.order_by(queryset), slice(None, 1))
                queryset = models.QuerySet.values(queryset, "pk")
            connection = _wrapper()
            compiler = queryset.query.get_compiler(connection=connection)
            sql, params = compiler.as_sql()
            index_of = node.stand_in_index
            plan = []
            for leaf in _where_leaves(queryset.query.where, []):
                index = index_of.get((type(leaf.rhs), leaf.rhs))
                if index is None:
                    plan.append((None, _leaf_parameters(leaf, compiler), None))
                else:
                    plan.append((index, type(leaf), leaf.lhs))
        except (EmptyResultSet, FullResultSet, _Unparameterized, TypeError):
            return None
        statement = cls(queryset, compiler, sql, plan)
        # Kept only when its parameters are exactly Django's, each value taken once.
        taken = sorted(index for index, *_ in plan if index is not None)
        if taken != list(range(len(node.stand_ins))) or statement.parameters(node.stand_ins) != list(params):
            return None
        if read == "count":
            statement.sql = f"SELECT COUNT(*) FROM ({sql}) subquery"
            statement.binary = True
        return statement

    def parameters(self, values) -> list | None:
        """The statement's parameters for these values, or None when a value changes its SQL (an integer out of
        its column's range makes Django drop or empty the condition: the caller takes Django's path)."""
        parameters = []
        compiler = self.compiler
        try:
            for index, lookup, lhs in self.plan:
                if index is None:
                    parameters.extend(lookup)
                else:
                    parameters.extend(_leaf_parameters(lookup(lhs, values[index]), compiler))
        except (EmptyResultSet, FullResultSet):
            return None
        return parameters

    def results(self, rows: list[tuple]) -> list:
        if self.names is None:
            return _results(self.queryset, self.compiler, rows)
        if self.converters:
            rows = self.compiler.apply_converters(rows, self.converters)
        names = self.names
        # A row may carry columns past the selected ones (ordering): as in ValuesIterable, only the names' count.
        return [dict(zip(names, row, strict=False)) for row in rows]


def _serving_here(queryset) -> bool:
    """Whether reads of this queryset may run on this loop's pool (see the module)."""
    if not settings.FAST_PATH:
        return False
    # The database as QuerySet.db routes it: without routers or hints, the manager's alias or the default.
    db = queryset._db or (DEFAULT_DB_ALIAS if not (settings.DATABASE_ROUTERS or queryset._hints) else queryset.db)
    if db != ALIAS:
        return False
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return False
    return loop in _serving and _wrapper().vendor == "postgresql"


def _runs_here(queryset) -> bool:
    """Whether a built queryset's read runs on this loop: one the methods below reproduce, on a loop that serves."""
    if not _serving_here(queryset):
        return False
    query = queryset.query
    return not (queryset._prefetch_related_lookups or query.select_for_update or query.combinator)


class LoopQuerySet(models.QuerySet):
    """A QuerySet whose `aget`, `afirst`, `acount`, `aexists` and `async for` run on the event loop's pool where
    they can (see the module), with the ORM's results, and whose `filter`, `order_by`, `values`, `only`,
    `select_related`, `all` and slices are recorded rather than built where they can be (see "recorded querysets"
    above); everything else is Django's."""

    # A recorded queryset: its node and the values of its calls; built (its `query` made) on first need.
    _unbuilt = False
    _chain_node = None
    _chain_values = ()

    def __init__(self, model=None, query=None, using=None, hints=None) -> None:
        super().__init__(model=model, query=query, using=using, hints=hints)
        # A fresh queryset (Model.objects): calls on it may be recorded, from its model's root node.
        self._root_key = (model, using) if query is None and not hints else None

    def _build_recorded(self) -> None:
        if self._unbuilt:
            self._unbuilt = False
            self._query = self._chain_node.build(self._chain_values)
            self._chain_node = None
            self._chain_values = ()

    @property
    def query(self):
        if self._unbuilt:
            self._build_recorded()
        else:
            # Handed out: it may be changed in place, so calls on this queryset are no longer recorded.
            self._root_key = None
        return models.QuerySet.query.fget(self)

    @query.setter
    def query(self, value):
        self._unbuilt = False
        self._chain_node = None
        self._root_key = None
        models.QuerySet.query.fset(self, value)

    def __deepcopy__(self, memo):
        self._build_recorded()  # a copy holds its own query, never a node
        return super().__deepcopy__(memo)

    # --- recorded calls

    def _recorded(self, call: tuple, values: list, apply):
        """This queryset after `call`, not built, or None when it cannot be recorded (then the caller runs
        Django's method)."""
        if (
            not settings.FAST_PATH
            or self._result_cache is not None
            or self._sticky_filter
            or self._defer_next_filter
            or self._for_write
            or self._hints
            or self._known_related_objects
            or self._deferred_filter
            or self._prefetch_related_lookups
        ):
            return None
        if self._unbuilt:
            node, before = self._chain_node, self._chain_values
        elif self._root_key is not None:
            node, before = _Node.root(*self._root_key), ()
        else:
            return None
        after = node.then(call, values, apply)
        return None if after is None else after.pending((*before, *values))

    def filter(self, *args, **kwargs):
        values: list = []
        if args:
            where = Q(*args, **kwargs)
            shape = _filter_shape(where, values)

            def apply(queryset, stand_ins):
                return models.QuerySet.filter(queryset, _with_values(where, iter(stand_ins)))

        else:
            # Keyword arguments only (the usual call): their shape without making a Q of them.
            shapes = tuple(_filter_shape(item, values) for item in kwargs.items())
            shape = None if None in shapes else (Q.AND, False, shapes)

            def apply(queryset, stand_ins):
                return models.QuerySet.filter(queryset, **_kwargs_with(kwargs, stand_ins))

        if shape is not None:
            recorded = self._recorded(("filter", shape), values, apply)
            if recorded is not None:
                return recorded
        return super().filter(*args, **kwargs)

    def _record_names(self, method: str, names: tuple):
        """A call whose arguments are field names (order_by, values, only, select_related), or None."""
        if not all(type(name) is str for name in names):
            return None
        django_method = getattr(models.QuerySet, method)
        return self._recorded((method, names), [], lambda queryset, _: django_method(queryset, *names))

    def order_by(self, *field_names):
        recorded = self._record_names("order_by", field_names)
        return super().order_by(*field_names) if recorded is None else recorded

    def values(self, *fields, **expressions):
        recorded = None if expressions else self._record_names("values", fields)
        return super().values(*fields, **expressions) if recorded is None else recorded

    def only(self, *fields):
        recorded = self._record_names("only", fields)
        return super().only(*fields) if recorded is None else recorded

    def select_related(self, *fields):
        recorded = self._record_names("select_related", fields)
        return super().select_related(*fields) if recorded is None else recorded

    def all(self):
        recorded = self._record_names("all", ())
        return super().all() if recorded is None else recorded

    def __getitem__(self, k):
        if (
            type(k) is slice
            and k.step is None
            and all(bound is None or (type(bound) is int and bound >= 0) for bound in (k.start, k.stop))
            and (self._unbuilt or self._root_key is not None)
        ):
            node = self._chain_node if self._unbuilt else None
            if node is None or not node.queryset.query.is_sliced:
                # A slice of a slice is Django's: the limits combine.
                recorded = self._recorded(
                    ("slice", k.start, k.stop), [], lambda queryset, _: models.QuerySet.__getitem__(queryset, k)
                )
                if recorded is not None:
                    return recorded
        return super().__getitem__(k)

    # --- reads on the loop

    def _statement(self, read: str):
        """(statement, parameters) of this recorded queryset read as `read`, or None when it does not run so here
        (not recorded, not on a loop that serves, not a statement this layer can keep, or a value that changes the
        statement's SQL)."""
        if not self._unbuilt or not _serving_here(self):
            return None
        statement = self._chain_node.statement(read)
        if statement is None:
            return None
        parameters = statement.parameters(self._chain_values)
        return None if parameters is None else (statement, parameters)

    def __aiter__(self):
        async def generator():
            if self._result_cache is None:
                prepared = self._statement("all")
                if prepared is not None:
                    statement, parameters = prepared
                    rows = await _execute(statement.sql, parameters, binary=statement.binary)
                    self._result_cache = statement.results(rows)
                elif _runs_here(self):
                    self._result_cache = await _evaluate(self)
                else:
                    await sync_to_async(self._fetch_all)()  # Django's own __aiter__
            for item in self._result_cache:
                yield item

        return generator()

    async def aget(self, *args, **kwargs):
        if not _serving_here(self):
            return await super().aget(*args, **kwargs)
        clone = self.filter(*args, **kwargs) if args or kwargs else self
        prepared = clone._statement("get")
        if prepared is not None:
            statement, parameters = prepared
            found = statement.results(await _execute(statement.sql, parameters, binary=statement.binary))
        else:
            if not _runs_here(clone):
                return await super().aget(*args, **kwargs)
            # As QuerySet.get(): unordered, at most MAX_GET_RESULTS rows read to tell "one" from "several".
            if clone.query.can_filter() and not clone.query.distinct_fields:
                clone = clone.order_by()
            clone = clone._chain()
            clone.query.set_limits(high=MAX_GET_RESULTS)
            found = await _evaluate(clone)
        if len(found) == 1:
            return found[0]
        if not found:
            raise self.model.DoesNotExist(f"{self.model._meta.object_name} matching query does not exist.")
        raise self.model.MultipleObjectsReturned(
            f"get() returned more than one {self.model._meta.object_name} -- it returned "
            f"{len(found) if len(found) < MAX_GET_RESULTS else f'more than {MAX_GET_RESULTS - 1}'}!"
        )

    async def afirst(self):
        prepared = self._statement("first")
        if prepared is not None:
            statement, parameters = prepared
            found = statement.results(await _execute(statement.sql, parameters, binary=statement.binary))
        else:
            # Unordered with an aggregation: Django's own answer (it refuses some of those).
            if not _runs_here(self) or (not self.ordered and self.query.group_by is not None):
                return await super().afirst()
            # As QuerySet.first(): by primary key when unordered, one row; made in one clone.
            first = self._chain()
            if not first.ordered:
                first.query.clear_ordering(force=True, clear_default=False)
                first.query.add_ordering("pk")
            first.query.set_limits(high=1)
            found = await _evaluate(first)
        return found[0] if found else None

    def _counts_here(self) -> bool:
        # Counted as COUNT(*) over the query's rows (its slice included): distinct or grouped rows are Django's.
        if not _runs_here(self):
            return False
        query = self.query
        return not (query.distinct or query.group_by is not None)

    async def acount(self) -> int:
        if self._result_cache is not None:
            return len(self._result_cache)
        prepared = self._statement("count")
        if prepared is not None:
            statement, parameters = prepared
            return (await _execute(statement.sql, parameters, binary=True))[0][0]
        if not self._counts_here():
            return await super().acount()
        return await _count(self)

    async def aexists(self) -> bool:
        if self._result_cache is not None:
            return bool(self._result_cache)
        prepared = self._statement("exists")
        if prepared is not None:
            statement, parameters = prepared
            return bool(await _execute(statement.sql, parameters, binary=statement.binary))
        if not self._counts_here() or self.query.is_sliced:
            return await super().aexists()
        return bool(await _evaluate(self.order_by().values_list("pk")[:1]))


class LoopManager(models.Manager.from_queryset(LoopQuerySet)):
    """`objects = LoopManager()`: the model's async reads run on the event loop where they can."""
