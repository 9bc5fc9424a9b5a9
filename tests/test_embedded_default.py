"""Smoke test of the embedded default: the real server process with none of the project's variables set."""

from tests.helpers import ServerProcess, clean_env, http_json, run_manage


def test_server_starts_and_serves_with_no_configuration(tmp_path):
    env = clean_env(DJANGO_DATA_DIR=str(tmp_path))
    migrated = run_manage("migrate", "--noinput", env=env)
    assert migrated.returncode == 0, migrated.stderr

    server = ServerProcess(env, tmp_path / "server.log")
    try:
        assert http_json(f"{server.base_url}/health") == (200, {"status": "ok"})

        status, body = http_json(f"{server.base_url}/ready")
        assert status == 200
        assert body["checks"] == {"database": "ok", "cache": "ok", "channel_layer": "ok"}

        status, schema = http_json(f"{server.base_url}/api/v1/openapi.json")
        assert status == 200
        assert "/api/v1/auth/token" in schema["paths"]

        # The in-process stand-ins work end to end: register, log in, read the profile, log out.
        credentials = {"username": "smoke", "email": "smoke@example.com", "password": "a long smoke password"}
        assert http_json(f"{server.base_url}/api/v2/auth/register", method="POST", body=credentials)[0] == 201
        login = {"username": "smoke", "password": credentials["password"]}
        status, pair = http_json(f"{server.base_url}/api/v2/auth/token", method="POST", body=login)
        assert status == 200
        bearer = {"Authorization": f"Bearer {pair['access_token']}"}
        assert http_json(f"{server.base_url}/api/v2/users/me", headers=bearer)[1]["username"] == "smoke"
        # Celery runs eagerly: an export has finished by the time its request is answered.
        status, job = http_json(
            f"{server.base_url}/api/v1/exports", method="POST", body={"format": "jsonl"}, headers=bearer
        )
        assert (status, job["status"], job["progress"]) == (202, "succeeded", 100)
        status, job = http_json(f"{server.base_url}/api/v1/jobs/{job['id']}", headers=bearer)
        assert (status, job["status"]) == (200, "succeeded")
        logout = {"refresh_token": pair["refresh_token"]}
        status, _ = http_json(f"{server.base_url}/api/v2/auth/logout", method="POST", body=logout, headers=bearer)
        assert status == 204
        assert http_json(f"{server.base_url}/api/v2/users/me", headers=bearer)[0] == 401
    finally:
        server.stop()

    assert (tmp_path / "db.sqlite3").exists()
    startup = next(entry for entry in server.log_lines() if entry.get("logger") == "core.startup")
    backends = startup["backends"]
    assert backends["database"].startswith("sqlite")
    assert backends["cache"] == "local-memory"
    assert backends["channel_layer"] == "in-memory"
    assert backends["celery"].startswith("eager")
