"""The outage tracker's rules (core/database.py): which errors mean the server is gone, fast refusals while it is,
one probe per interval, and recovery. The whole flow against a real server and a stopped PostgreSQL is in
tests/faults/test_database_outage.py."""

import logging

import psycopg
import pytest
from django.db import OperationalError
from psycopg import errors
from psycopg_pool import PoolTimeout

from core.database import DatabaseUnavailable, Outage, is_server_gone


def wrapped(cause: Exception) -> OperationalError:
    """As Django raises a driver error: its own class, the driver's as the cause."""
    try:
        raise OperationalError(str(cause)) from cause
    except OperationalError as exc:
        return exc


@pytest.mark.parametrize(
    ("error", "gone"),
    [
        (errors.AdminShutdown("terminating connection due to administrator command"), True),
        (errors.CannotConnectNow("the database system is starting up"), True),
        (psycopg.OperationalError("connection failed: Connection refused"), True),
        (errors.QueryCanceled("canceling statement due to statement timeout"), False),
        (errors.DeadlockDetected("deadlock detected"), False),
        (PoolTimeout("couldn't get a connection after 10.00 sec"), False),
    ],
)
def test_only_errors_of_the_server_itself_count_as_an_outage(error, gone):
    assert is_server_gone(wrapped(error)) is gone
    assert is_server_gone(error) is gone


def test_while_down_requests_are_refused_at_once_but_one_per_interval_probes(settings, caplog):
    settings.DB_OUTAGE_PROBE_SECONDS = 1
    outage = Outage()
    assert outage.admit() is False
    with caplog.at_level(logging.ERROR, logger="core.database"):
        outage.failed(wrapped(errors.AdminShutdown("terminating connection")))
        outage.failed(wrapped(psycopg.OperationalError("connection failed")))
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert outage.is_down
    with pytest.raises(DatabaseUnavailable):
        outage.admit()
    # Our own refusal is no news: it neither logs nor extends anything.
    outage.failed(DatabaseUnavailable("The database is unavailable."))


def test_a_probe_is_due_after_the_interval_and_recovery_clears_the_outage(settings, monkeypatch, caplog):
    settings.DB_OUTAGE_PROBE_SECONDS = 1
    clock = [1000.0]
    monkeypatch.setattr("core.database.time.monotonic", lambda: clock[0])
    outage = Outage()
    outage.failed(wrapped(errors.AdminShutdown("terminating connection")))
    with pytest.raises(DatabaseUnavailable):
        outage.admit()
    clock[0] += 1.0
    assert outage.admit() is True  # this caller probes
    with pytest.raises(DatabaseUnavailable):
        outage.admit()  # the others are still refused meanwhile
    with caplog.at_level(logging.WARNING, logger="core.database"):
        outage.recovered()
    assert not outage.is_down
    assert outage.admit() is False
    assert "database available again after 1.0 s; 2 requests were refused meanwhile" in caplog.text


def test_a_probe_that_cannot_connect_keeps_the_database_down(settings):
    settings.DB_OUTAGE_PROBE_SECONDS = 1
    outage = Outage()
    outage.failed(wrapped(errors.AdminShutdown("terminating connection")))
    with pytest.raises(DatabaseUnavailable):
        outage.probe({"host": "127.0.0.1", "port": 1, "dbname": "app", "user": "postgres"})
    assert outage.is_down
