"""Shared helpers for tests that run the project in a separate process."""

import os
import socket
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def clean_env(**overrides: str) -> dict[str, str]:
    """The machine's environment without any of the project's variables, plus the given ones."""
    project_prefixes = ("DJANGO_", "DATABASE_URL", "REDIS_URL", "CELERY_", "DB_POOL", "LOG_", "CORS_", "CACHE_")
    env = {key: value for key, value in os.environ.items() if not key.startswith(project_prefixes)}
    env.update(overrides)
    return env


def run_manage(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "manage.py", *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
