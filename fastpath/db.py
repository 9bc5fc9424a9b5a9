"""Reads on the event loop: querysets compiled by Django's ORM, run by psycopg's async driver.

Django's async ORM (`afirst()`, `async for`) runs every query in a worker thread (`sync_to_async`): a hand-off to
the request's thread and back per query, and the request holds a pooled connection from its first query until the
response is sent. For the hot reads (a post, a user, a page of posts) that overhead was most of the request's cost
(README, Performance). Here the same queryset is compiled by Django (same SQL, same parameters, same converters)
and executed on a psycopg `AsyncConnectionPool` of the event loop: no thread, and the connection goes back to the
pool as soon as the rows are read.

- One pool per event loop (so per server process), sized like Django's (DB_POOL_MIN / DB_POOL_MAX, DB_POOL_TIMEOUT)
  and configured like Django's connections (autocommit, the time zone, Django's adapters, client-side binding,
  the health check on checkout when CONN_HEALTH_CHECKS is set, skipped for a connection that completed a query
  within the last `CHECK_AFTER_IDLE_SECONDS`, as HikariCP's "alive bypass window" does: under load a connection
  comes back every few milliseconds, and the probe was a second round trip for every single-row read).
- Only PostgreSQL (with SQLite, the embedded default, everything goes through Django's ORM), and only for code
  running on the event loop, which can never be inside `atomic()`: writes and their reads stay in the services,
  in the request's thread, on Django's connection.
- Statements are counted in django-prometheus' database series and traced (one client span each, statement with
  placeholders only) like the ORM's own.
"""

import asyncio
import math
import re
import time
import weakref
from datetime import UTC

import psycopg
from django.conf import settings
from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.test.utils import _TestState
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

_pools: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncConnectionPool]" = weakref.WeakKeyDictionary()
# Per pool: the reads allowed into it at once (_fetch).
_gates: "weakref.WeakKeyDictionary[AsyncConnectionPool, asyncio.Semaphore]" = weakref.WeakKeyDictionary()
# Compiling needs a DatabaseWrapper (its operations and features), never a connection: one, shared, never connected.
_compiler_connection = None


def _native() -> bool:
    """PostgreSQL, outside Django's test environment. There, each test's transaction lives on the test thread's
    connection, which a connection of this pool would not see: tests in-process go through the ORM (tests that
    start real server processes, and the benchmark, take this path)."""
    # The compiling wrapper's vendor: the same settings as connections[ALIAS], without a thread-local lookup.
    return _wrapper().vendor == "postgresql" and not hasattr(_TestState, "saved_data")


def _wrapper():
    global _compiler_connection
    if _compiler_connection is None:
        _compiler_connection = connections.create_connection(ALIAS)
    return _compiler_connection


def _pool() -> AsyncConnectionPool:
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
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
            name=f"adb-{ALIAS}",
        )
        _pools[loop] = pool
        _gates[pool] = asyncio.Semaphore(pool.max_size)
    return pool


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


async def _execute(sql: str, params, *, prepared: bool = False) -> list[tuple]:
    pool = _pool()
    if pool.closed:
        await pool.open()
    _EXECUTED.inc()
    started = time.perf_counter()
    try:
        if tracing_enabled():
            attributes = {"db.system": "postgresql", "db.statement": sql}
            with tracer.start_as_current_span(sql.split(None, 1)[0], kind=SpanKind.CLIENT, attributes=attributes):
                return await _fetch(pool, sql, params, prepared)
        return await _fetch(pool, sql, params, prepared)
    except Exception as exc:
        errors_total.labels(ALIAS, "postgresql", type(exc).__name__).inc()
        raise
    finally:
        _DURATION.observe(time.perf_counter() - started)


async def _check_unless_just_used(connection: AsyncConnection) -> None:
    """The pool's health check (an empty query), unless the connection just proved itself with a query."""
    if time.monotonic() - getattr(connection, "_adb_used_at", -math.inf) < CHECK_AFTER_IDLE_SECONDS:
        return
    await AsyncConnectionPool.check_connection(connection)


async def _fetch(pool: AsyncConnectionPool, sql: str, params, prepared: bool) -> list[tuple]:
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
            if prepared:
                # A prepared statement of this connection (parsed and planned by PostgreSQL once), its parameters
                # bound by the server and its rows in binary: see Prepared.
                async with AsyncCursor(connection) as cursor:
                    await cursor.execute(sql, params, prepare=True, binary=True)
                    rows = await cursor.fetchall()
            else:
                async with connection.cursor() as cursor:
                    await cursor.execute(sql, params)
                    rows = await cursor.fetchall()
            connection._adb_used_at = time.monotonic()
            return rows
    finally:
        gate.release()


async def values(queryset) -> list[dict]:
    """The rows of a `.values(...)` queryset, as the ORM would give them."""
    if not _native():
        return [row async for row in queryset]
    query = queryset.query
    compiler = query.get_compiler(connection=_wrapper())
    try:
        sql, params = compiler.as_sql()
    except EmptyResultSet:
        return []
    rows = await _execute(sql, params)
    fields = [selected[0] for selected in compiler.select[: compiler.col_count]]
    converters = compiler.get_converters(fields)
    if converters:
        rows = compiler.apply_converters(rows, converters)
    names = [*query.extra_select, *query.values_select, *query.annotation_select]
    return [dict(zip(names, row, strict=True)) for row in rows]


async def first(queryset) -> dict | None:
    """The first row of a `.values(...)` queryset (in its order), or None."""
    if not _native():
        return await queryset.afirst()
    if not queryset.ordered:
        queryset = queryset.order_by("pk")
    rows = await values(queryset[:1])
    return rows[0] if rows else None


async def count(queryset) -> int:
    """What `queryset.acount()` returns (a sliced queryset counts only its slice)."""
    if not _native():
        return await queryset.acount()
    query = queryset.values("pk").query
    try:
        sql, params = query.get_compiler(connection=_wrapper()).as_sql()
    except EmptyResultSet:
        return 0
    rows = await _execute(f"SELECT COUNT(*) FROM ({sql}) subquery", params)
    return rows[0][0]


# Far outside any real id, so that a parameter equal to one of these can only be the stand-in.
_STAND_IN = 7_777_777_777_777_000


class Prepared:
    """A query whose shape never changes, compiled by Django once: only its parameters change from call to call.

    `build(*args)` returns the `.values(...)` queryset for the given arguments, which must already be of the
    column's Python type (ids validated by the API's schemas) or be slice bounds. The first call compiles it with
    stand-in arguments and remembers where each one lands among the SQL parameters (or, for a slice, in the
    LIMIT / OFFSET Django writes into the SQL); compiling (the ORM's query building and SQL
    generation) was a tenth of a single-row read's time. Outside PostgreSQL, or inside a transaction, `build` is
    evaluated by the ORM as usual.
    """

    def __init__(self, build, arity: int = 1) -> None:
        self.build = build
        self.arity = arity
        self._plan = None

    def _compile(self):
        stand_ins = [_STAND_IN + index for index in range(self.arity)]
        query = self.build(*stand_ins).query
        compiler = query.get_compiler(connection=_wrapper())
        compiled_sql, compiled_params = compiler.as_sql()
        # Placeholders and, for slices, the literal LIMIT / OFFSET Django writes into the SQL, in the order they
        # appear: each becomes a placeholder bound to a parameter or to an argument.
        tokens = re.compile(r"(?<!%)%s|\b(" + "|".join(str(value) for value in stand_ins) + r")\b")
        parts, params, slots, remaining = [], [], [], iter(compiled_params)
        position = 0
        for match in tokens.finditer(compiled_sql):
            parts.append(compiled_sql[position : match.start()])
            parts.append("%s")
            position = match.end()
            if match.group(1):
                params.append(None)
                slots.append(stand_ins.index(int(match.group(1))))
                continue
            value = next(remaining)
            params.append(value)
            slots.append(stand_ins.index(value) if type(value) is int and value in stand_ins else None)
        parts.append(compiled_sql[position:])
        sql = "".join(parts)
        if sorted(slot for slot in slots if slot is not None) != list(range(self.arity)):
            raise ValueError("each argument of a prepared query must appear exactly once in its SQL")
        fields = [selected[0] for selected in compiler.select[: compiler.col_count]]
        names = [*query.extra_select, *query.values_select, *query.annotation_select]
        return sql, params, slots, names, compiler, compiler.get_converters(fields)

    async def values(self, *args) -> list[dict]:
        if not _native():
            return [row async for row in self.build(*args)]
        if self._plan is None:
            self._plan = self._compile()
        sql, params, slots, names, compiler, converters = self._plan
        rows = await _execute(
            sql,
            [value if slot is None else args[slot] for value, slot in zip(params, slots, strict=True)],
            prepared=settings.DB_PREPARED_STATEMENTS,
        )
        if converters:
            rows = compiler.apply_converters(rows, converters)
        return [dict(zip(names, row, strict=True)) for row in rows]

    async def first(self, *args) -> dict | None:
        """For a `build` that returns at most one row (sliced `[:1]`)."""
        rows = await self.values(*args)
        return rows[0] if rows else None
