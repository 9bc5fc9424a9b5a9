"""The async ORM's reads on the event loop: a QuerySet whose async terminal methods run on psycopg's async driver.

Django's async ORM (`aget()`, `afirst()`, `async for`) runs every query in a worker thread (`sync_to_async`): a
hand-off to the request's thread and back per query, and the request holds a pooled connection from its first
query until the response is sent. For the hot reads (a post, a user, a page of posts, the user behind a token)
that was most of the request's cost (README, Performance). `LoopQuerySet` keeps the ORM's API and its results:
the queryset is compiled by Django (same SQL, same parameters), the rows are read on a psycopg
`AsyncConnectionPool` of the event loop, and Django's own iterable (`ModelIterable`, `ValuesIterable`, ...) turns
them into what the ORM returns (the same converters, model instances, `select_related` objects). No thread, and the
connection goes back to the pool as soon as the rows are read. Building and compiling a queryset costs more than
running it: `filter()` on a queryset filtered alike before reuses the query it built then (_FilterTemplate), and
each shape of statement is compiled once (_compile).

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
import collections
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
from django.conf import settings
from django.core.exceptions import EmptyResultSet
from django.db import connections, models
from django.db.models import Q
from django.db.models.expressions import Col
from django.db.models.lookups import BuiltinLookup, In, Lookup, Range
from django.db.models.query import MAX_GET_RESULTS
from django.db.models.sql.constants import GET_ITERATOR_CHUNK_SIZE
from django.db.models.sql.where import WhereNode
from django_prometheus.db.metrics import errors_total, execute_total, query_duration_seconds
from opentelemetry.trace import SpanKind
from psycopg import AsyncClientCursor, AsyncConnection, AsyncCursor
from psycopg.adapt import AdaptersMap
from psycopg.pq import Format
from psycopg_pool import AsyncConnectionPool, PoolTimeout

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


def _runs_here(queryset) -> bool:
    if not settings.FAST_PATH or queryset.db != ALIAS:
        return False
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return False
    if loop not in _serving or _wrapper().vendor != "postgresql":
        return False
    query = queryset.query
    return not (queryset._prefetch_related_lookups or query.select_for_update or query.combinator)


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
            open=False,
            name=f"loop-{ALIAS}",
        )
        _serving[loop] = pool
        _gates[pool] = asyncio.Semaphore(pool.max_size)
    return pool


async def close_pool() -> None:
    """Closes the running loop's pool, if it has one (tests; a server's pool lives as long as its process)."""
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


# Compiled queries by shape (see _compiled), most recently used last.
_compiled: "collections.OrderedDict[tuple, tuple]" = collections.OrderedDict()
COMPILED_QUERIES_KEPT = 512


def _shape(query, where_key: tuple) -> tuple | None:
    """What the SQL of `query` depends on (its WHERE clause's shape given), or None for a query with anything this
    does not account for (annotations, extra(), grouping, combinators, locks, expressions
    in the ordering, filtered relations, a subquery)."""
    if (
        query.annotations
        or query.extra
        or query.extra_tables
        or query.extra_order_by
        or query.group_by is not None
        or query.combinator
        or query.select_for_update
        or query.subquery
        or query.explain_info
        or query._filtered_relations
        or not all(type(field) is str for field in query.order_by)
    ):
        return None
    joins = tuple(
        (
            alias,
            type(join),
            join.table_name,
            getattr(join, "join_type", None),
            getattr(join, "parent_alias", None),
            getattr(join, "join_field", None),
        )
        for alias, join in query.alias_map.items()
    )
    return (
        query.model,
        where_key,
        joins,
        tuple(alias for alias, count in query.alias_refcount.items() if count),
        query.default_cols,
        query.select,
        query.values_select,
        repr(query.select_related),
        query.max_depth,
        query.deferred_loading[0] if isinstance(query.deferred_loading[0], frozenset) else None,
        query.deferred_loading[1],
        query.order_by,
        query.default_ordering,
        query.standard_ordering,
        query.low_mark,
        query.high_mark,
        query.distinct,
        query.distinct_fields,
    )


class _Unkeyed(Exception):
    """A WHERE clause with a part whose SQL could depend on more than its shape."""


# Values whose SQL is a placeholder whatever the value (booleans and None are part of the shape instead).
_PLAIN_VALUES = {int, str, float, datetime, date, time_of_day, Decimal, uuid.UUID}


def _where_key(node, leaves: list) -> tuple:
    """The shape of a WHERE tree (connectors, negations, and per lookup its class, column and value type), with its
    lookups collected into `leaves` in the order their SQL and parameters come. Raises _Unkeyed for anything but
    built-in lookups comparing a column with a plain value (or a boolean, or None)."""
    if isinstance(node, WhereNode):
        return (node.connector, node.negated, tuple(_where_key(child, leaves) for child in node.children))
    if isinstance(node, BuiltinLookup) and type(node.lhs) is Col and not isinstance(node, In | Range):
        rhs = node.rhs
        if type(rhs) in _PLAIN_VALUES:
            leaves.append(node)
            return (type(node), node.lhs.alias, node.lhs.target, type(rhs))
        if rhs is None or type(rhs) is bool:
            leaves.append(node)
            return (type(node), node.lhs.alias, node.lhs.target, rhs)
    raise _Unkeyed


def _leaf_parameters(leaf, connection) -> list:
    """A lookup's parameters as Django's `as_sql` gives them, for the lookups _where_key accepts: its prepared
    value, or none (IS NULL, a boolean column tested as such)."""
    if leaf.rhs is None or type(leaf.rhs) is bool:
        return []
    return list(leaf.get_db_prep_lookup(leaf.rhs, connection)[1])


def _compile(query) -> tuple:
    """(compiler, sql, params) of a query, as `compiler.as_sql()` gives them.

    Compiling (setting up the select, the joins, the ordering, the WHERE clause, and writing the SQL) was most of
    a single-row read's query cost. The SQL of a query depends on its shape, not on the values it filters by, so it
    is kept per shape (_shape, _where_key), with the compiler whose select and converters Django's iterables read;
    the parameters are each lookup's value as Django prepares it. A shape is kept only when, compiled by Django
    the first time, its statement's parameters were exactly those; any other shape is compiled every time.
    Raises EmptyResultSet as as_sql does.
    """
    connection = _wrapper()
    leaves: list = []
    try:
        key = _shape(query, _where_key(query.where, leaves))
    except _Unkeyed:
        key = None
    if key is not None:
        cached = _compiled.get(key)
        if cached is not None:
            _compiled.move_to_end(key)
            cached_compiler, sql = cached
            if cached_compiler is not None:
                params = [param for leaf in leaves for param in _leaf_parameters(leaf, connection)]
                return cached_compiler, sql, tuple(params)
    compiler = query.get_compiler(connection=connection)
    sql, params = compiler.as_sql()
    if key is not None and key not in _compiled:
        expected = [param for leaf in leaves for param in _leaf_parameters(leaf, connection)]
        _compiled[key] = (compiler, sql) if list(params) == expected else (None, None)
        if len(_compiled) > COMPILED_QUERIES_KEPT:
            _compiled.popitem(last=False)
    return compiler, sql, params


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
    listed above. Found once per compiled statement."""
    binary = compiler.__dict__.get("_loop_binary")
    if binary is None:
        selected = [expression for expression, *_ in compiler.select[0 : compiler.col_count]]
        binary = compiler._loop_binary = all(
            getattr(getattr(expression, "output_field", None), "get_internal_type", str)() in _BINARY_SAFE_FIELDS
            for expression in selected
        )
    return binary


async def _evaluate(queryset) -> list:
    """What `list(queryset)` gives, read on the loop."""
    query = queryset.query
    try:
        compiler, sql, params = _compile(query)
    except EmptyResultSet:
        return []
    rows = await _execute(sql, params, binary=_binary_rows(compiler)) if sql else []
    fetched = _FetchedCompiler(compiler, rows)
    # Django's iterable asks the query for its compiler: this one, for as long as it runs (no await in between).
    query.get_compiler = lambda *args, **kwargs: fetched
    try:
        return list(queryset._iterable_class(queryset, chunked_fetch=False, chunk_size=GET_ITERATOR_CHUNK_SIZE))
    finally:
        del query.get_compiler


async def _count(queryset) -> int:
    try:
        _, sql, params = _compile(queryset.values("pk").query)
    except EmptyResultSet:
        return 0
    rows = await _execute(f"SELECT COUNT(*) FROM ({sql}) subquery", params, binary=True)
    return rows[0][0]


# Filters whose values can be stood in for while their template is built: a unique value of the same type each.
_STAND_IN_TYPES = {int, str, datetime}
_STAND_IN_EPOCH = datetime(1971, 2, 3, 4, 5, 6, tzinfo=UTC)
# Templates of `filter()` on fresh querysets of a model (Model.objects.filter(...)), per (model, database).
_fresh_filters: dict[tuple, dict] = {}
FILTER_TEMPLATES_KEPT = 256


def _stand_in(kind: type, index: int):
    if kind is int:
        return 1_900_000_000 + index
    if kind is str:
        return f"fastpath-stand-in-{index}"
    return _STAND_IN_EPOCH + timedelta(microseconds=index + 1)


def _filter_shape(node, values: list):
    """The shape of a filter's arguments (lookups, connectors, the type of each value) with its values taken out
    into `values` in order, or None when a value is of a kind that cannot be stood in for (None, a model, a list,
    an expression: those stay constants of the shape or keep Django's path)."""
    if isinstance(node, Q):
        children = tuple(_filter_shape(child, values) for child in node.children)
        return None if None in children else (node.connector, node.negated, children)
    if type(node) is tuple and len(node) == 2 and type(node[0]) is str:
        name, value = node
        if type(value) in _STAND_IN_TYPES:
            values.append(value)
            return (name, type(value))
        if value is None or type(value) is bool or isinstance(value, Enum):
            # Part of the shape itself: None and booleans change the lookup, a choice is a constant of the code.
            return (name, "constant", value)
    return None


def _with_values(node, values):
    """The filter's arguments again, with `values` (an iterator) in place of the ones _filter_shape took out."""
    if isinstance(node, Q):
        return Q(
            *(_with_values(child, values) for child in node.children), _connector=node.connector, _negated=node.negated
        )
    name, value = node
    return (name, next(values)) if type(value) in _STAND_IN_TYPES else node


def _leaves(node, path=()):
    for index, child in enumerate(node.children):
        if isinstance(child, WhereNode):
            yield from _leaves(child, (*path, index))
        else:
            yield (*path, index), child


class _FilterTemplate:
    """A `filter()` built once by Django with stand-ins for its values, and where each value's lookup sits in the
    resulting WHERE tree: applying it clones the built query and puts a lookup of the same class on the same column
    with the real value in each of those places. Building a filter (resolving names, joins, lookups) was most of a
    single-row read's query cost; the lookup itself is still made by Django (its value prepared as usual)."""

    def __init__(self, query, paths: list[tuple]) -> None:
        self.query = query
        self.paths = paths

    @classmethod
    def build(cls, queryset, node: Q, values: list) -> "_FilterTemplate | None":
        stand_ins = [_stand_in(type(value), index) for index, value in enumerate(values)]
        try:
            built = models.QuerySet.filter(queryset, _with_values(node, iter(stand_ins))).query
        except Exception:
            return None
        found: dict[int, tuple] = {}
        for path, leaf in _leaves(built.where):
            if not isinstance(leaf, Lookup):
                continue
            for index, stand_in in enumerate(stand_ins):
                if type(leaf.rhs) is type(stand_in) and leaf.rhs == stand_in:
                    if index in found:
                        return None
                    found[index] = path
        if len(found) != len(stand_ins):
            return None
        return cls(built, [found[index] for index in range(len(stand_ins))])

    def apply(self, queryset, values: list):
        query = self.query.chain()
        for path, value in zip(self.paths, values, strict=True):
            parent = query.where
            for index in path[:-1]:
                parent = parent.children[index]
            leaf = parent.children[path[-1]]
            parent.children[path[-1]] = type(leaf)(leaf.lhs, value)
        # QuerySet._clone with the new query, without cloning the source's query only to replace it.
        filtered = queryset.__class__(model=queryset.model, query=query, using=queryset._db, hints=queryset._hints)
        filtered._sticky_filter = queryset._sticky_filter
        filtered._for_write = queryset._for_write
        filtered._prefetch_related_lookups = queryset._prefetch_related_lookups[:]
        filtered._known_related_objects = queryset._known_related_objects
        filtered._iterable_class = queryset._iterable_class
        filtered._fields = queryset._fields
        return filtered


class LoopQuerySet(models.QuerySet):
    """A QuerySet whose `aget`, `afirst`, `acount`, `aexists` and `async for` run on the event loop's pool where
    they can (see the module), with the ORM's results, and whose `filter()` on a queryset it has filtered before
    in the same way reuses that work (_FilterTemplate); everything else is Django's."""

    def __init__(self, model=None, query=None, using=None, hints=None) -> None:
        super().__init__(model=model, query=query, using=using, hints=hints)
        # A fresh queryset (Model.objects): every one of the model is the same, so they share their templates.
        self._fresh = query is None
        self._filter_templates = _fresh_filters.setdefault((model, using), {}) if self._fresh else None

    def filter(self, *args, **kwargs):
        if not settings.FAST_PATH or self._defer_next_filter or self._sticky_filter or self.query.is_sliced:
            return super().filter(*args, **kwargs)
        node = Q(*args, **kwargs)
        values: list = []
        shape = _filter_shape(node, values)
        if shape is None:
            return super().filter(*args, **kwargs)
        templates = self._filter_templates
        if templates is None:
            templates = self._filter_templates = {}
        elif self._fresh and self.query.where.children:
            # A fresh queryset changed in place (a deferred related filter applied): no longer like the others.
            return super().filter(*args, **kwargs)
        template = templates.get(shape, _FilterTemplate)
        if template is _FilterTemplate:
            if len(templates) >= FILTER_TEMPLATES_KEPT:
                templates.clear()
            template = templates[shape] = _FilterTemplate.build(self, node, values)
        if template is None:
            return super().filter(*args, **kwargs)
        return template.apply(self, values)

    def __aiter__(self):
        if self._result_cache is not None or not _runs_here(self):
            return super().__aiter__()

        async def generator():
            if self._result_cache is None:
                self._result_cache = await _evaluate(self)
            for item in self._result_cache:
                yield item

        return generator()

    async def aget(self, *args, **kwargs):
        if not _runs_here(self):
            return await super().aget(*args, **kwargs)
        # As QuerySet.get(): unordered, at most MAX_GET_RESULTS rows read to tell "one" from "several".
        clone = self.filter(*args, **kwargs)
        if clone.query.can_filter() and not clone.query.distinct_fields:
            clone = clone.order_by()
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
        query = self.query
        return _runs_here(self) and not (query.distinct or query.group_by is not None)

    async def acount(self) -> int:
        if self._result_cache is not None:
            return len(self._result_cache)
        if not self._counts_here():
            return await super().acount()
        return await _count(self)

    async def aexists(self) -> bool:
        if self._result_cache is not None:
            return bool(self._result_cache)
        if not self._counts_here() or self.query.is_sliced:
            return await super().aexists()
        return bool(await _evaluate(self.order_by().values_list("pk")[:1]))


class LoopManager(models.Manager.from_queryset(LoopQuerySet)):
    """`objects = LoopManager()`: the model's async reads run on the event loop where they can."""
