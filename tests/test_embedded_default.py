"""Smoke test of the embedded default: the real server process with none of the project's variables set."""

import json
import subprocess
import time
import urllib.request

from tests.helpers import PROJECT_ROOT, PYTHON, clean_env, free_port, run_manage


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_server_starts_and_serves_with_no_configuration(tmp_path):
    env = clean_env(DJANGO_DATA_DIR=str(tmp_path))
    migrated = run_manage("migrate", "--noinput", env=env)
    assert migrated.returncode == 0, migrated.stderr

    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, body = _get(f"{base}/health")
                break
            except OSError:
                assert server.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "server did not come up:\n" + log_path.read_text()
                time.sleep(0.2)
        assert (status, body) == (200, {"status": "ok"})

        status, body = _get(f"{base}/ready")
        assert status == 200
        assert body["checks"] == {"database": "ok", "cache": "ok", "channel_layer": "ok"}

        status, schema = _get(f"{base}/api/v1/openapi.json")
        assert status == 200
        assert schema["info"]["version"] == "1.0"
    finally:
        server.terminate()
        server.wait(timeout=15)

    assert (tmp_path / "db.sqlite3").exists()
    startup = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    backends = next(entry["backends"] for entry in startup if entry.get("logger") == "core.startup")
    assert backends["database"].startswith("sqlite")
    assert backends["cache"] == "local-memory"
    assert backends["channel_layer"] == "in-memory"
    assert backends["celery"].startswith("eager")
