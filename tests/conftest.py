"""The suite runs against real PostgreSQL and Redis (`make test` points at the local ones) and says so loudly.

Fixtures shared by every app's tests: users, tokens, and real server processes on the test database.
"""

import itertools
from contextlib import contextmanager
from datetime import timedelta

import pytest
import redis
from channels.layers import channel_layers
from django.conf import settings
from django.db import connection
from django.utils import timezone
from prometheus_client import REGISTRY

from tests.asgi_client import ASGIClient, ServingLoop
from tests.helpers import ServerProcess, clean_env

DEFAULT_PASSWORD = "correct horse battery staple"


def _require_services() -> None:
    engine = settings.DATABASES["default"]["ENGINE"]
    if not engine.endswith("postgresql"):
        pytest.exit(
            f"The suite needs PostgreSQL, but DATABASE_URL gives {engine}. Run it with `make test`.", returncode=3
        )
    if not settings.REDIS_URL:
        pytest.exit("The suite needs Redis, but REDIS_URL is not set. Run it with `make test`.", returncode=3)
    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        pytest.exit(f"Redis is unreachable at {settings.REDIS_URL}: {exc}", returncode=3)


def pytest_sessionstart(session) -> None:
    _require_services()


def pytest_report_header(config) -> str:
    from core.backends import backends_in_use

    return "backends: " + ", ".join(f"{name}={value}" for name, value in backends_in_use().items())


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    # Reaching the database once up front turns "connection refused" into one clear message.
    with django_db_blocker.unblock():
        try:
            connection.ensure_connection()
        except Exception as exc:  # any driver error means the same thing here
            pytest.exit(f"PostgreSQL is unreachable via DATABASE_URL: {exc}", returncode=3)


@pytest.fixture(scope="session")
def serving_loop(django_db_setup):
    """The event loop that serves the test clients' API requests, as a server process' loop serves its own. Closed
    (with its pool's connections) before the test database is dropped."""
    loop = ServingLoop()
    yield loop
    loop.close()


@pytest.fixture
def client(serving_loop):
    """Django's test client, with /api/ requests through the project's ASGI application (tests/asgi_client.py):
    tests that use it commit their data."""
    return ASGIClient(serving_loop)


@pytest.fixture
def count_statements():
    """`with count_statements() as counted: ...; counted.total`: the SQL statements run meanwhile on the default
    database by this process, on Django's connections and the event loop's pool alike (django-prometheus' series,
    which both feed), whichever thread ran them."""

    def executed() -> float:
        labels = {"alias": "default", "vendor": "postgresql"}
        return REGISTRY.get_sample_value("django_db_execute_total", labels) or 0.0

    class Counted:
        total = 0

    @contextmanager
    def counting():
        counted = Counted()
        before = executed()
        yield counted
        counted.total = int(executed() - before)

    return counting


@pytest.fixture(autouse=True)
def _clean_redis():
    """Each test starts with an empty Redis database (the test URL points at a database of its own), and with
    new channel layer instances: theirs hold asyncio locks bound to the event loop of the test that made them."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    channel_layers.backends.clear()
    yield
    client.close()


_usernames = itertools.count(1)


@pytest.fixture
def make_user():
    """Create an active user; `make_user(is_staff=True)` for staff. Password: DEFAULT_PASSWORD."""
    from accounts.models import User

    def make(username: str | None = None, password: str = DEFAULT_PASSWORD, **fields) -> User:
        username = username or f"user{next(_usernames)}"
        fields.setdefault("email", f"{username}@example.com")
        return User.objects.create_user(username=username, password=password, **fields)

    return make


@pytest.fixture
def issue_tokens():
    """A real login for `user` (a refresh family in the database), without going through the endpoint."""
    from accounts.services import _family_start

    return _family_start


@pytest.fixture
def bearer(issue_tokens):
    """`bearer(user)` -> headers carrying a fresh access token for that user."""

    def headers_for(user) -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_tokens(user).access_token}"}

    return headers_for


def child_process_env(**overrides: str) -> dict[str, str]:
    """Environment for a child process (server, worker) that must share this run's test database and Redis."""
    database = settings.DATABASES["default"]
    credentials = database["USER"] + (f":{database['PASSWORD']}" if database["PASSWORD"] else "")
    url = f"postgresql://{credentials}@{database['HOST']}:{database['PORT']}/{database['NAME']}"
    # The speed layer as this run has it: the suite runs once with it on and, in part, once with it off.
    fast_path = {"FAST_PATH": str(settings.FAST_PATH).lower(), "FAST_PATH_CHECK_BODIES": "true"}
    shared = {"DATABASE_URL": url, "REDIS_URL": settings.REDIS_URL, "LOG_LEVEL": "INFO", **fast_path}
    return clean_env(**{**shared, **overrides})


@pytest.fixture
def live_server_process(transactional_db, tmp_path):
    """The project served by a real server process on the test database. Tests using it commit their data
    (transactional_db) so the server sees it."""
    server = ServerProcess(child_process_env(), tmp_path / "server.log")
    yield server
    server.stop()


@pytest.fixture
def child_process_overrides() -> dict[str, str]:
    """Extra environment for `celery_worker_process` and `configured_live_server_process`. Override this
    fixture in a module or test to configure both alike (an email backend, a feature setting)."""
    return {}


@pytest.fixture
def celery_worker_process(transactional_db, tmp_path, child_process_overrides):
    """A real Celery worker on this run's test database and Redis broker, ready to take tasks. Function scoped:
    the autouse Redis flush before each test would otherwise empty its queues under it."""
    from tests.helpers import WorkerProcess

    worker = WorkerProcess(child_process_env(**child_process_overrides), tmp_path / "worker.log")
    yield worker
    worker.stop()


@pytest.fixture
def configured_live_server_process(transactional_db, tmp_path, child_process_overrides):
    """`live_server_process` with `child_process_overrides` in its environment, the same the worker gets."""
    server = ServerProcess(child_process_env(**child_process_overrides), tmp_path / "configured-server.log")
    yield server
    server.stop()


# --- posts, jobs and the broker: factories and views shared by the apps' tests --------------------------------
# Posts made here go straight to the database (as the admin or a data load would); tests that write through the API
# check what a client sees afterwards.


@pytest.fixture
def make_post(make_user):
    """`make_post(author=None, **fields)`: one post, published unless told otherwise."""

    from posts.models import Post, PostStatus

    def make(author=None, **fields) -> Post:
        fields.setdefault("title", "A post")
        fields.setdefault("body", "Its body.")
        fields.setdefault("status", PostStatus.PUBLISHED)
        return Post.objects.create(author=author or make_user(), **fields)

    return make


@pytest.fixture
def make_posts():
    """`make_posts(author, count, status=..., newest=...)`: `count` posts one second apart, in one insert; returned
    newest first (the order every list uses)."""

    from posts.models import Post, PostStatus

    def make(author, count: int, *, status: str = PostStatus.PUBLISHED, newest=None) -> list[Post]:
        newest = newest or timezone.now()
        posts = [
            Post(
                author=author,
                title=f"Post {i}",
                body=f"Body of post {i}.",
                status=status,
                created_at=newest - timedelta(seconds=i),
            )
            for i in range(count)
        ]
        return Post.objects.bulk_create(posts)

    return make


@pytest.fixture
def make_job():
    """`make_job(owner, **fields)`: an export job row, queued unless told otherwise."""
    from jobs.models import Job

    def make(owner, **fields) -> Job:
        fields.setdefault("params", {"format": "csv", "scope": "mine"})
        return Job.objects.create(owner=owner, kind=Job.Kind.EXPORT, **fields)

    return make


@pytest.fixture
def broker_tasks():
    """`broker_tasks()`: (task name, args) of each message waiting on the real broker's default queue."""
    import base64
    import json

    import redis
    from django.conf import settings

    def waiting() -> list[tuple[str, list]]:
        # Celery's Redis transport keeps the default queue as a list named "celery" of JSON envelopes whose body
        # is the base64 of [args, kwargs, options].
        broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        envelopes = [json.loads(raw) for raw in broker.lrange("celery", 0, -1)]
        return [(e["headers"]["task"], json.loads(base64.b64decode(e["body"]))[0]) for e in envelopes]

    return waiting


@pytest.fixture
def staff_client(client, make_user):
    """The test client logged in (by session) as a superuser: the admin's console."""
    client.force_login(make_user(is_staff=True, is_superuser=True))
    return client
