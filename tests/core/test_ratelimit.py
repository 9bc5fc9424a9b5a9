"""The rate limiter: its algorithms on real Redis (and in process), atomicity under concurrency, the contract's
headers and 429 on every endpoint, and what happens when Redis is unreachable."""

import asyncio
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from prometheus_client import REGISTRY

from core import ratelimit
from core.keyvalue import MemoryKeyValue, RedisKeyValue
from core.ratelimit import Limiter, Policy, SlidingWindow, TokenBucket
from tests.conftest import child_process_env
from tests.helpers import ServerProcess, http_json

CLOSED_REDIS_PORT_URL = "redis://127.0.0.1:1/0"


class Clock:
    """A clock the test moves by hand: refills and windows are checked without sleeping."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return Clock()


def redis_limiter(clock) -> Limiter:
    return Limiter(RedisKeyValue(settings.REDIS_URL, timeout=0.5), f"test-rl:{uuid.uuid4().hex}", clock=clock)


@pytest.fixture(params=["redis", "memory"])
def limiter(request, clock):
    """Both backends must behave the same: the in-process one stands in for Redis during an outage. Process
    memory expires its keys on the test's clock too."""
    if request.param == "redis":
        return redis_limiter(clock)
    return Limiter(MemoryKeyValue(clock=clock), "test-rl", clock=clock)


@pytest.fixture(autouse=True)
def _fresh_limiters():
    # Limiters are per process and remember Redis outages and in-process counts; each test starts clean.
    ratelimit._limiters.clear()
    yield
    ratelimit._limiters.clear()


def window(limit: int, seconds: int) -> Policy:
    return Policy(name="t-window", rule=SlidingWindow(limit=limit, window=seconds))


def bucket(rate: float, burst: int) -> Policy:
    return Policy(name="t-bucket", rule=TokenBucket(rate=rate, burst=burst))


async def hits(limiter, policy, identity, count) -> list:
    return [await limiter.hit(policy, identity) for _ in range(count)]


# --- algorithms -----------------------------------------------------------------------------------------


async def test_sliding_window_allows_the_limit_then_refuses_until_the_oldest_request_leaves(limiter, clock):
    policy = window(limit=3, seconds=60)
    first = await limiter.hit(policy, "client")
    assert (first.allowed, first.limit, first.remaining, first.reset_ms) == (True, 3, 2, 60_000)
    clock.advance(10)
    await hits(limiter, policy, "client", 2)
    refused = await limiter.hit(policy, "client")
    assert (refused.allowed, refused.remaining) == (False, 0)
    # The first request (t=0) leaves the window at t=60: 50 s from now.
    assert refused.retry_after_ms == 50_000
    assert refused.headers() == {"RateLimit-Limit": "3", "RateLimit-Remaining": "0", "RateLimit-Reset": "50"}

    clock.advance(50)
    assert (await limiter.hit(policy, "client")).allowed
    assert not (await limiter.hit(policy, "client")).allowed
    clock.advance(10)  # the two requests of t=10 leave
    assert [d.allowed for d in await hits(limiter, policy, "client", 3)] == [True, True, False]


async def test_refused_requests_do_not_use_up_the_window(limiter, clock):
    policy = window(limit=2, seconds=10)
    await hits(limiter, policy, "client", 2)
    for _ in range(5):
        clock.advance(1)
        assert not (await limiter.hit(policy, "client")).allowed
    clock.advance(5)  # 10 s after the two allowed ones: the refusals in between counted for nothing
    assert [d.allowed for d in await hits(limiter, policy, "client", 3)] == [True, True, False]


async def test_token_bucket_bursts_then_refills_at_its_rate(limiter, clock):
    policy = bucket(rate=10, burst=20)
    decisions = await hits(limiter, policy, "client", 21)
    assert [d.allowed for d in decisions] == [True] * 20 + [False]
    assert decisions[0].remaining == 19 and decisions[19].remaining == 0
    assert decisions[20].retry_after_ms == 100  # one token comes back every 100 ms
    assert decisions[20].reset_ms == 2000  # the bucket is full again after 2 s

    clock.advance(0.5)
    assert [d.allowed for d in await hits(limiter, policy, "client", 6)] == [True] * 5 + [False]

    clock.advance(60)  # a long pause refills up to the burst, not beyond it
    assert [d.allowed for d in await hits(limiter, policy, "client", 21)] == [True] * 20 + [False]


async def test_token_bucket_ignores_a_clock_that_went_backwards(limiter, clock):
    policy = bucket(rate=1, burst=2)
    await hits(limiter, policy, "client", 2)
    clock.advance(-30)  # another server whose clock is behind
    assert not (await limiter.hit(policy, "client")).allowed
    clock.advance(31)
    assert (await limiter.hit(policy, "client")).allowed


async def test_clients_and_policies_have_separate_quotas(limiter):
    policy = window(limit=1, seconds=60)
    assert (await limiter.hit(policy, "a")).allowed
    assert not (await limiter.hit(policy, "a")).allowed
    assert (await limiter.hit(policy, "b")).allowed
    other = Policy(name="t-other", rule=SlidingWindow(limit=1, window=60))
    assert (await limiter.hit(other, "a")).allowed


@pytest.mark.parametrize("policy", [window(limit=10, seconds=60), bucket(rate=1, burst=10)], ids=["window", "bucket"])
async def test_concurrent_requests_never_exceed_the_limit_on_redis(policy, clock):
    limiter = redis_limiter(clock)
    decisions = await asyncio.gather(*(limiter.hit(policy, "client") for _ in range(100)))
    assert sum(d.allowed for d in decisions) == 10


def test_the_in_process_limiter_forgets_idle_clients(clock):
    keyvalue = MemoryKeyValue(clock=clock)
    keyvalue.keys.max_entries = 5
    limiter = Limiter(keyvalue, "test-rl", clock=clock)
    policy = window(limit=1, seconds=10)
    for n in range(6):
        asyncio.run(limiter.hit(policy, f"client-{n}"))
    clock.advance(11)
    asyncio.run(limiter.hit(policy, "newcomer"))  # over the bound: the idle ones are swept
    assert len(keyvalue.keys) == 1


@pytest.mark.parametrize(
    ("ip", "user_id", "identity"),
    [
        ("203.0.113.7", None, "ip:203.0.113.7"),
        ("203.0.113.7", 42, "user:42"),
        # One subscriber's IPv6 /64 is one client, however many addresses it rotates through.
        ("2001:db8:1:2:aaaa::1", None, "ip:2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", None, "ip:2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", None, "ip:203.0.113.7"),
        ("unknown", None, "ip:unknown"),
    ],
)
def test_client_identity(ip, user_id, identity):
    assert ratelimit.client_identity(ip, user_id) == identity


# --- on every API endpoint ------------------------------------------------------------------------------


def limits(*, read=(100, 60), write=(10, 20), auth=(20, 60)) -> dict:
    return {
        "read": {"algorithm": "sliding_window", "limit": read[0], "window": read[1]},
        "write": {"algorithm": "token_bucket", "rate": write[0], "burst": write[1]},
        "auth": {"algorithm": "sliding_window", "limit": auth[0], "window": auth[1], "fail_closed": True},
    }


@pytest.mark.django_db(transaction=True)
def test_responses_carry_the_rate_limit_headers(client):
    for path in ("/api/v1/posts/", "/api/v2/posts", "/api/v1/users/1"):
        response = client.get(path)
        assert response["RateLimit-Limit"] == "100"
        assert response["RateLimit-Reset"] == "60"
    # One quota for all reads of a client, whichever version or endpoint (and error responses count too).
    assert response["RateLimit-Remaining"] == "97"


@pytest.mark.django_db(transaction=True)
def test_over_the_limit_is_429_with_retry_after_and_the_contract_body(client, settings):
    settings.RATE_LIMIT_POLICIES = limits(read=(3, 60))
    statuses = [client.get("/api/v2/posts").status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    response = client.get("/api/v1/posts/")
    assert response.status_code == 429
    body = response.json()
    assert body == {"detail": body["detail"], "code": "rate_limited", "retry_after": body["retry_after"]}
    assert 1 <= body["retry_after"] <= 60
    assert response["Retry-After"] == str(body["retry_after"])
    assert response["RateLimit-Remaining"] == "0"
    assert response["RateLimit-Limit"] == "3"
    assert response["Deprecation"] == "true"  # still a v1 response
    # Another client (address) is not affected.
    assert client.get("/api/v1/posts/", REMOTE_ADDR="198.51.100.9").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_authenticated_clients_are_limited_per_user_not_per_address(client, settings, make_user, bearer):
    settings.RATE_LIMIT_POLICIES = limits(read=(2, 60))
    alice, bob = make_user(), make_user()
    alice_headers, bob_headers = bearer(alice), bearer(bob)
    assert [client.get("/api/v1/users/me", headers=alice_headers).status_code for _ in range(3)] == [200, 200, 429]
    # Same address, another user; and a second token of alice's shares her quota.
    assert client.get("/api/v1/users/me", headers=bob_headers).status_code == 200
    assert client.get("/api/v1/users/me", headers=bearer(alice)).status_code == 429
    # An invalid token is counted against the address, and still refused as such.
    forged = {"Authorization": "Bearer not.a.token"}
    assert [client.get("/api/v1/posts/", headers=forged).status_code for _ in range(3)] == [401, 401, 429]


@pytest.mark.django_db(transaction=True)
def test_writes_use_the_token_bucket(client, settings, make_user, bearer):
    settings.RATE_LIMIT_POLICIES = limits(write=(1, 3))
    headers = bearer(make_user())
    statuses = [
        client.post("/api/v1/posts/", {"title": f"t{n}"}, content_type="application/json", headers=headers)
        for n in range(4)
    ]
    assert [r.status_code for r in statuses] == [201, 201, 201, 429]
    assert statuses[0]["RateLimit-Limit"] == "3"
    assert statuses[0]["RateLimit-Remaining"] == "2"
    assert statuses[3]["Retry-After"] == "1"
    # Reads are a separate quota.
    assert client.get("/api/v1/posts/", headers=headers).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_invalid_requests_count_too(client, settings):
    settings.RATE_LIMIT_POLICIES = limits(read=(2, 60))
    assert client.get("/api/v1/posts/?per_page=0").status_code == 422
    assert client.get("/api/v1/posts/999").status_code == 404
    assert client.get("/api/v1/posts/").status_code == 429


def test_every_operation_documents_429_and_the_auth_ones_503(client):
    auth_paths = {"/auth/register", "/auth/token", "/auth/refresh"}
    for version in ("v1", "v2"):
        schema = client.get(f"/api/{version}/openapi.json").json()
        prefix = f"/api/{version}"
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                responses = operation["responses"]
                assert "429" in responses, f"{method} {path}"
                if path.removeprefix(prefix) in auth_paths:
                    assert "503" in responses, f"{method} {path}"


# --- Redis unreachable ----------------------------------------------------------------------------------


def fallback_count(policy: str) -> float:
    labels = {"policy": policy, "outcome": "in_process"}
    return REGISTRY.get_sample_value("ratelimit_redis_unavailable_total", labels) or 0.0


@pytest.fixture
def redis_down(settings):
    settings.RATE_LIMIT_REDIS_URL = CLOSED_REDIS_PORT_URL


@pytest.mark.django_db(transaction=True)
def test_reads_fail_open_to_in_process_limits_logged_and_counted(client, settings, redis_down, caplog):
    settings.RATE_LIMIT_POLICIES = limits(read=(3, 60))
    before = fallback_count("read")
    with caplog.at_level(logging.ERROR, logger="core.ratelimit"):
        responses = [client.get("/api/v2/posts") for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert responses[0]["RateLimit-Remaining"] == "2"
    assert fallback_count("read") - before == 4
    # Logged once per outage, not once per request.
    assert len([r for r in caplog.records if "Redis unreachable" in r.getMessage()]) == 1


@pytest.mark.django_db(transaction=True)
def test_writes_fail_open_too(client, redis_down, make_user, bearer):
    response = client.post(
        "/api/v1/posts/", {"title": "written"}, content_type="application/json", headers=bearer(make_user())
    )
    assert response.status_code == 201
    assert response["RateLimit-Limit"] == "20"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/auth/token", {"username": "someone", "password": "anything at all"}),
        ("/auth/register", {"username": "someone", "email": "someone@example.com", "password": "x7!kq-vault-rain"}),
        ("/auth/refresh", {"refresh_token": "anything"}),
    ],
)
def test_auth_endpoints_fail_closed(client, redis_down, path, body):
    for version in ("v1", "v2"):
        response = client.post(f"/api/{version}{path}", body, content_type="application/json")
        assert response.status_code == 503
        assert response.json()["code"] == "rate_limiter_unavailable"
        assert response["Retry-After"] == "5"
    assert not client.post("/api/v1/auth/register", body, content_type="application/json").has_header(
        "RateLimit-Limit"
    )


# --- across real server processes -----------------------------------------------------------------------


@pytest.fixture
def two_servers(transactional_db, tmp_path):
    env = child_process_env(RATE_LIMIT_READ_LIMIT="10", RATE_LIMIT_READ_WINDOW_SECONDS="60")
    servers = [ServerProcess(env, tmp_path / f"server{n}.log") for n in range(2)]
    yield servers
    for server in servers:
        server.stop()


def test_one_limit_holds_across_processes_under_concurrent_load(two_servers):
    urls = [f"{server.base_url}/api/v2/posts" for server in two_servers] * 50
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(http_json, urls))
    statuses = [status for status, _ in results]
    assert statuses.count(200) == 10
    assert statuses.count(429) == 90
    assert all(body["code"] == "rate_limited" for status, body in results if status == 429)
