"""What every app's Celery tasks share: which failures are worth another try, and how long to wait before it."""

import random

from django.db import InterfaceError, OperationalError

# Failures worth another try: the database or the storage was briefly unreachable.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, OSError)


def backoff_seconds(retries: int, *, base: float = 2.0, cap: float = 300.0) -> float:
    """Exponential backoff with full jitter: retries of many tasks that failed together spread out."""
    return random.uniform(0, min(cap, base * 2**retries))
