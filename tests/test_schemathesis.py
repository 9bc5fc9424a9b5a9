"""Both OpenAPI schemas tell the truth: Schemathesis (every check, the stateful phase following the schemas' links)
against a real server process, as a user holding a valid token, finds no server error, no response outside its
schema and no schema-valid request refused beyond the few rules tests/schemathesis/schemathesis.toml names.

Bounded for CI: SCHEMATHESIS_MAX_EXAMPLES examples per operation (default 20) and a fixed seed, so a failure can
be replayed (SCHEMATHESIS_SEED to explore others)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import UNLIMITED_RATE_LIMITS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]

CONFIG = Path(__file__).parent / "schemathesis" / "schemathesis.toml"
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@pytest.fixture
def child_process_overrides():
    return UNLIMITED_RATE_LIMITS


@pytest.fixture
def caller(make_user, issue_tokens):
    """A user with something to find: posts of their own and of others, a room."""
    from chat.models import Room
    from posts.models import Post, PostStatus

    user, other = make_user(), make_user()
    for author in (user, other):
        for status in (PostStatus.PUBLISHED, PostStatus.DRAFT):
            Post.objects.create(author=author, title=f"{status} post", body="Body.", status=status)
    Room.objects.create(slug="lobby", name="Lobby")
    return issue_tokens(user).access_token


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_schemathesis_finds_nothing(configured_live_server_process, caller, version, tmp_path):
    server = configured_live_server_process
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(CONFIG),
        "run",
        f"{server.base_url}/api/{version}/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "20"),
        "--seed",
        os.environ.get("SCHEMATHESIS_SEED", "1"),
        # One worker: Hypothesis' source inspection is not thread-safe on Python 3.11 ("AST constructor recursion
        # depth mismatch").
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--header",
        f"Authorization: Bearer {caller}",
    ]
    run = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=540, env={**os.environ, "NO_COLOR": "1"}
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-20_000:]
    assert " passed" in report and "generated" in report, report[-5_000:]
    log = server.log_path.read_text()
    server_errors = [line for line in log.splitlines() if '"level":"ERROR"' in line or '"level":"CRITICAL"' in line]
    assert server_errors == [], server_errors[:5]
    assert caller not in log
