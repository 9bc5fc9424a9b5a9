"""Fault tests: the service against backing services that die. Each test kills only instances it started itself
(a PostgreSQL cluster or a Redis server of its own, on a free port), never the machine's shared ones."""

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from tests.helpers import free_port


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        pytest.skip("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")
    return Path(initdb).parent


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1 and a free port, stopped and started at will. `initdb` refuses
    to run as root, so as root it runs as the `postgres` system user."""

    def __init__(self) -> None:
        self.bin = _postgres_bin()
        self.port = free_port()
        # Not under pytest's tmp_path: its parents are private to root, and the server runs as `postgres`.
        self.root = Path(tempfile.mkdtemp(prefix="fault-postgres-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.as_owner: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self.as_owner = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        self.start()
        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute("CREATE DATABASE app")

    def _run(self, program: str, *args, timeout: float = 60) -> None:
        subprocess.run(
            [*self.as_owner, self.bin / program, *map(str, args)], check=True, capture_output=True, timeout=timeout
        )

    def url(self, database: str = "app") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """`fast`: connections are terminated (clients see an admin shutdown); `immediate`: the server is gone."""
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def remove(self) -> None:
        subprocess.run(
            [*self.as_owner, self.bin / "pg_ctl", "-D", self.data, "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def private_postgres():
    server = PrivatePostgres()
    yield server
    server.remove()


class PrivateRedis:
    """A throwaway Redis server on 127.0.0.1 and a free port, killed and restarted (on the same port) at will."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.start()

    def url(self, database: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as connection:
                    connection.sendall(b"PING\r\n")
                    if connection.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the private Redis did not start")

    def kill(self) -> None:
        """SIGKILL: every connection to it dies, as when a node is lost."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def private_redis():
    server = PrivateRedis()
    yield server
    server.kill()
