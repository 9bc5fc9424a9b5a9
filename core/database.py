"""PostgreSQL outages: answered in a moment with `503 database_unavailable`, logged once, recovered without a restart.

Without this, a request during an outage waits out the pool's timeout (DB_POOL_TIMEOUT, 10 s) for a connection
that cannot come, and one failing in flight is a `500` with a traceback per request. Here, the first failure that
shows the server itself is gone (it refused or dropped the connection; not a query's own error such as a timeout
or a deadlock) marks the database down for this process. While it is down, every request needing a connection is
refused at once, except one every DB_OUTAGE_PROBE_SECONDS that tries a fresh connection of its own (never waiting
in the pool): when that succeeds the database is up again, and the pool refills from it. The outage is logged when
it starts and when it ends, with how many requests were refused in between; `database_unavailable_total` counts
them.

The ORM reaches it through the project's database backend (core/postgresql/); the speed layer's loop pool calls
the same `outage` before each read.
"""

import logging
import threading
import time

import psycopg
from django.conf import settings
from django.db import OperationalError
from prometheus_client import Counter
from psycopg_pool import PoolClosed, PoolTimeout

logger = logging.getLogger(__name__)

REFUSED = Counter("database_unavailable_total", "Requests refused at once because PostgreSQL is known to be down")

# SQLSTATE classes that mean the server, not the statement, failed: 08 connection exceptions, 57P operator
# intervention (admin shutdown, crash shutdown, cannot connect now: starting up or shutting down).
_SERVER_GONE_STATES = ("08", "57P")


class DatabaseUnavailable(OperationalError):
    """PostgreSQL is known to be down; nothing was sent to it. An OperationalError, so the code that retries or
    answers those (Celery tasks, the API's 503) treats it as one."""


def is_server_gone(exc: BaseException) -> bool:
    """Whether an error (Django's or psycopg's) shows the database server unreachable, rather than one statement
    failing. A connection that could not be made or was lost has no SQLSTATE."""
    if isinstance(exc, DatabaseUnavailable):
        return True
    cause = exc if isinstance(exc, psycopg.Error) else exc.__cause__
    if not isinstance(cause, psycopg.OperationalError | psycopg.InterfaceError):
        return False
    if isinstance(cause, PoolTimeout | PoolClosed):
        # The pool was busy (or replaced), which a server that answers can cause too: its failed connection
        # attempts, seen by OutageReportingConnection, are what tell an outage.
        return False
    state = cause.sqlstate
    return state is None or state.startswith(_SERVER_GONE_STATES)


class Outage:
    """This process's view of whether the database is down. Thread-safe: the ORM's requests run on threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._next_probe_at = 0.0
        self._refused = 0

    @property
    def is_down(self) -> bool:
        return self._down_since is not None

    def admit(self) -> bool:
        """Before taking a connection. Raises DatabaseUnavailable while the database is known to be down; returns
        True when this caller is the one to probe (connect outside the pool, then report), False normally."""
        if self._down_since is None:
            return False
        with self._lock:
            if self._down_since is None:
                return False
            now = time.monotonic()
            if now >= self._next_probe_at:
                self._next_probe_at = now + settings.DB_OUTAGE_PROBE_SECONDS
                return True
            self._refused += 1
        REFUSED.inc()
        raise DatabaseUnavailable("The database is unavailable.")

    def failed(self, exc: BaseException) -> None:
        """A connection failed or was lost: the database is down from now, if it was not already. Our own
        refusals are no news (one answered after a probe succeeded must not start a second outage)."""
        if isinstance(exc, DatabaseUnavailable) or not is_server_gone(exc):
            return
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
            self._next_probe_at = self._down_since + settings.DB_OUTAGE_PROBE_SECONDS
            self._refused = 0
        logger.error(
            "database unavailable (%s): requests needing it are answered 503 until it is back (checked every %s s)",
            str(exc).strip() or type(exc).__name__,
            settings.DB_OUTAGE_PROBE_SECONDS,
        )

    def recovered(self) -> None:
        """A probe connected: the database is up again."""
        with self._lock:
            if self._down_since is None:
                return
            lasted, refused = time.monotonic() - self._down_since, self._refused
            self._down_since = None
        logger.warning("database available again after %.1f s; %s requests were refused meanwhile", lasted, refused)

    def probe(self, conninfo: dict) -> None:
        """One fresh connection outside the pool, closed at once: `recovered` when it works, DatabaseUnavailable
        (after `failed`) when it does not."""
        try:
            psycopg.connect(**{**conninfo, "connect_timeout": settings.DB_OUTAGE_PROBE_SECONDS}).close()
        except psycopg.Error as exc:
            raise DatabaseUnavailable("The database is unavailable.") from exc
        self.recovered()


outage = Outage()
