"""Django's PostgreSQL backend, aware of outages (core/database.py): settings' ENGINE is "core.postgresql".

Public extension points, no copied internals: `get_new_connection` (every checkout from the pool) asks the outage
first, and after one replaces the pool (`close_pool`: the next checkout opens a new one); the pool's connections are
of a class that reports a failed connect, which is how an outage is seen while the pool reconnects in the
background.
"""

import psycopg
from django.db.backends.postgresql import base

from core.database import outage


class OutageReportingConnection(psycopg.Connection):
    """The pool's connections: one that cannot be made tells the outage tracker, at once."""

    @classmethod
    def connect(cls, *args, **kwargs):
        try:
            return super().connect(*args, **kwargs)
        except psycopg.Error as exc:
            outage.failed(exc)
            raise


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, settings_dict, *args, **kwargs):
        options = settings_dict.get("OPTIONS", {})
        if isinstance(options.get("pool"), dict):
            pool = {"connection_class": OutageReportingConnection, **options["pool"]}
            settings_dict = {**settings_dict, "OPTIONS": {**options, "pool": pool}}
        super().__init__(settings_dict, *args, **kwargs)

    def get_new_connection(self, conn_params):
        if outage.admit():
            # This request probes: a fresh connection outside the pool, which would make it wait out its timeout.
            outage.probe(conn_params)
            # Back: a fresh pool. The old one's connections died with the server, and its reconnection waits in a
            # backoff that grew with the outage (psycopg_pool doubles it up to minutes).
            self.close_pool()
        try:
            return super().get_new_connection(conn_params)
        except psycopg.Error as exc:
            outage.failed(exc)
            raise
