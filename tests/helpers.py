"""Shared helpers for tests that run the project in separate processes: real servers, real workers."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent


def clean_env(**overrides: str) -> dict[str, str]:
    """The machine's environment without any of the project's variables, plus the given ones."""
    project_prefixes = (
        "DJANGO_",
        "DATABASE_URL",
        "DB_",
        "REDIS_URL",
        "CELERY_",
        "LOG_",
        "CORS_",
        "CACHE_",
        "EMAIL_",
        "JWT_",
        "LOGIN_",
        "RATE_LIMIT_",
        "POSTS_",
        "USERS_",
        "RESPONSE_CACHE",
        "CHAT_",
        "CHANNEL_LAYER",
        "SHUTDOWN_",
        "TRUSTED_PROXY_COUNT",
        "MAX_REQUEST_BODY_BYTES",
        "API_V1_SUNSET",
        "READY_CHECK_",
        "METRICS_",
        "WORKER_METRICS_",
        "PROMETHEUS_",
        "OTEL_",
        "JOB_",
        "EXPORT_",
        "WEBHOOK_",
        "DEFAULT_FROM_EMAIL",
        "FAST_PATH",
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith(project_prefixes)}
    env.update(overrides)
    return env


# For child processes under a test's load: the limiter would answer most of it with 429s (documented, but it would
# hide what lies behind them). It still runs on every request.
UNLIMITED_RATE_LIMITS = {
    "RATE_LIMIT_READ_LIMIT": "1000000",
    "RATE_LIMIT_WRITE_RATE": "100000",
    "RATE_LIMIT_WRITE_BURST": "100000",
    "RATE_LIMIT_AUTH_LIMIT": "1000000",
}


def run_manage(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "manage.py", *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_json(url: str, *, method: str = "GET", body=None, headers=None, timeout: float = 10) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, json.loads(raw) if raw else {}


class ServerProcess:
    """A real server process (`manage.py serve`, as in production) on a free loopback port."""

    # Tests stop servers often: no drain phase unless a test asks for one.
    def __init__(self, env: dict[str, str], log_path: Path, serve_args: tuple[str, ...] = ("--drain-seconds", "0")):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        with log_path.open("w") as log:
            self.process = subprocess.Popen(
                [PYTHON, "manage.py", "serve", "--port", str(self.port), *serve_args],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_until_healthy()

    def _wait_until_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if http_json(f"{self.base_url}/health", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server did not come up:\n{self.log_path.read_text()}")
            time.sleep(0.2)

    def log_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM (a graceful stop for the server and Celery's warm shutdown), then SIGKILL after 15 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class WorkerProcess:
    """A real Celery worker consuming the broker its environment names, ready once it says so. The solo pool by
    default (tasks run in the worker process itself); `pool_options` choose another, e.g. production's prefork."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        timeout: float = 60,
        pool_options: tuple[str, ...] = ("--pool=solo",),
    ) -> None:
        # A node name of its own, so the readiness line found in the log can only be this worker's.
        self.name = f"test-worker-{os.getpid()}-{os.urandom(4).hex()}"
        self.log_path = log_path
        with log_path.open("w") as log:
            self.process = subprocess.Popen(
                [
                    str(BIN / "celery"),
                    "-A",
                    "config",
                    "worker",
                    *pool_options,
                    "--loglevel=INFO",
                    f"--hostname={self.name}@%h",
                    # A lone test worker has no neighbours to synchronise with; mingling only delays readiness.
                    "--without-mingle",
                    "--without-gossip",
                ],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_until_ready(timeout)

    def _wait_until_ready(self, timeout: float) -> None:
        # Celery logs "<node> ready." once it consumes from its queues; a test's deadline then covers only its task.
        deadline = time.monotonic() + timeout
        while not any(self.name in message and message.endswith("ready.") for message in self.log_messages()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"celery worker did not come up:\n{self.log()}")
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text()

    def log_messages(self) -> list[str]:
        """The worker's log messages: its JSON lines' messages, and Celery's own plain-text banner lines."""
        messages = []
        for line in self.log().splitlines():
            # A JSON line still being written does not parse yet; it is read again on the next call.
            with contextlib.suppress(ValueError, KeyError):
                line = json.loads(line)["message"] if line.startswith("{") else line
            messages.append(line.rstrip())
        return messages

    def stop(self) -> None:
        # Warm shutdown: the task in hand finishes, nothing new is taken.
        stop_process(self.process)


async def open_websocket(server: "ServerProcess", access_token: str, path: str, query: str = "", **connect_options):
    """A WebSocket client on `path` of a server process, let in by a fresh ticket as the contract says (the ticket
    is fetched over HTTP first); its first frame, the welcome, is left to the caller."""
    import asyncio

    import websockets

    status, body = await asyncio.to_thread(
        http_json,
        f"{server.base_url}/api/v1/chat/tickets",
        method="POST",
        headers={"Authorization": f"Bearer {access_token}"},
    )
    assert status == 200, body
    url = f"ws://127.0.0.1:{server.port}{path}?ticket={body['ticket']}{query}"
    return await websockets.connect(url, **connect_options)
