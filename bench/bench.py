"""HTTP benchmark: the project against the FastAPI peer (../shared/anchors/fastapi_seed), side by side.

Both apps get the same rows (1,000 users and 20,000 posts; `--large`: 5,000 and 200,000) in databases of their
own on the same PostgreSQL, the same server (uvicorn with uvloop and httptools) with the same worker count, and
the same load generator (wrk, one thread, 50 connections). Rounds alternate between the apps (A, B, A, B) so a
noisy machine shifts both alike; only ratios from one run mean anything.

The project runs exactly as in production: `manage.py serve`, DJANGO_DEBUG=false, PostgreSQL through Django's
psycopg pool, Redis for the cache and the rate limiter, JSON access logs, every middleware. wrk sends
`X-Forwarded-Proto: https` as the TLS-terminating proxy in front of it would. Twice: as shipped (response cache
on) and with RESPONSE_CACHE=false (every read goes to PostgreSQL, as the peer's do). What is changed for the
benchmark, and said in the results: the rate limits are raised (RATE_LIMIT_*) so that wrk's single address is
measured, not refused; the limiter itself still runs on every request.

    make bench                                    # about 6 minutes; writes bench/RESULTS.md
    .venv/bin/python bench/bench.py --large       # 200,000 posts
    .venv/bin/python bench/bench.py --rows user --seconds 5 --no-write   # a quick look at one row

Needs wrk (Debian package `wrk`), PostgreSQL (BENCH_PG, default postgresql://postgres@127.0.0.1:5432: the
databases bench_project and bench_peer are recreated) and Redis (BENCH_REDIS_URL, default
redis://127.0.0.1:6379/9: flushed). The peer's packages go into bench/.venv-peer (bench/requirements-peer.txt).

`--baseline REF` measures an older commit beside the work tree, to tell a change's effect from the machine's:
REF is checked out into a detached `git worktree` in the run's temporary directory (removed at the end) and
served exactly as the project, same Python, environment, databases and Redis, as two more targets, "base-on"
and "base-off", in the same alternating rounds. Only its cache keys get a prefix of their own, so that neither
commit reads entries the other wrote. RESULTS.md then has a section "Against the baseline": new/base req/s
per row, within 5 % or not.

    .venv/bin/python bench/bench.py --baseline HEAD~3 --rows post,user --no-write
"""

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = sys.executable
PEER_APP_DIR = (ROOT / ".." / "shared" / "anchors" / "fastapi_seed").resolve()
PEER_VENV = BENCH / ".venv-peer"
PEER_REQUIREMENTS = BENCH / "requirements-peer.txt"
PG = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
PROJECT_DB = "bench_project"
PEER_DB = "bench_peer"
PORTS = {"on": 8201, "off": 8202, "peer": 8203, "base-on": 8204, "base-off": 8205}
# The baseline's targets (--baseline) and the project target each one is compared with.
BASELINE = {"base-on": "on", "base-off": "off"}
# New/base req/s at or above this counts as no slower than the baseline: this machine's noise is a few percent.
BASELINE_TOLERANCE = 0.95
# Per server process: the project's Django pool (DB_POOL_MAX, its default) and the peer's SQLAlchemy pool
# (pool_size=20 + max_overflow=10, fixed in its app.py).
PROJECT_POOL_MIN, PROJECT_POOL_MAX = 2, 10
PEER_POOL_MAX = 30
# High enough never to refuse wrk (one client address, thousands of requests a second); the limiter still runs.
UNLIMITED = "1000000000"
# The proxy in front of production terminates TLS and says so; without it SECURE_SSL_REDIRECT answers 301.
PROXY_HEADERS = {"X-Forwarded-Proto": "https"}
SECRET_KEY = "benchmark-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"


# --- rows -------------------------------------------------------------------------------------------------


@dataclass
class Row:
    key: str
    label: str
    project_paths: str  # "posts" | "users" | a fixed path
    peer_paths: str | None
    method: str = "GET"
    targets: tuple = ("on", "off", "peer")

    def with_baseline(self) -> "Row":
        """The baseline measured wherever the project is, in the same alternating rounds."""
        if not {"on", "off"} & set(self.targets):
            return self
        return replace(self, targets=(*self.targets, *(base for base, new in BASELINE.items() if new in self.targets)))


ROWS = [
    Row("post", "GET /api/v1/posts/{id} vs peer GET /posts/{id}", "post_ids", "peer_post_ids"),
    Row("user", "GET /api/v1/users/{id} vs peer GET /users/{id}", "user_ids", "peer_user_ids"),
    Row("list", "GET /api/v1/posts/?page=3 vs peer GET /posts/?page=3", "/api/v1/posts/?page=3", "/posts/?page=3"),
    Row("cursor", "GET /api/v2/posts/ (cursor; peer column: its page=3)", "/api/v2/posts", "/posts/?page=3"),
    # Writes last: each one moves the public lists to a new cache generation.
    Row("write", "POST /api/v1/posts/ (bearer; project only)", "/api/v1/posts/", None, "POST", ("on", "off")),
]


@dataclass
class Result:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    non_2xx: int


@dataclass
class Cell:
    runs: list[Result] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return statistics.mean(r.requests_per_second for r in self.runs)

    @property
    def p50(self) -> float:
        return statistics.mean(r.p50_ms for r in self.runs)

    @property
    def p99(self) -> float:
        return max(r.p99_ms for r in self.runs)

    @property
    def errors(self) -> int:
        return sum(r.errors + r.non_2xx for r in self.runs)


# --- helpers ------------------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(command: list[str], env: dict | None = None, cwd: Path = ROOT) -> None:
    completed = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    if completed.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")


def recreate_database(name: str) -> None:
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as connection:
        connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')


def database_connections() -> dict[str, int]:
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as connection:
        rows = connection.execute(
            "SELECT datname, count(*) FROM pg_stat_activity WHERE datname IN (%s, %s) GROUP BY datname",
            [PROJECT_DB, PEER_DB],
        ).fetchall()
    counts = {PROJECT_DB: 0, PEER_DB: 0}
    counts.update(dict(rows))
    return counts


def process_tree_rss_kib(pid: int) -> int:
    """Resident memory of a process and all its descendants (the server's workers), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        stack.extend(children.get(current, []))
        with contextlib.suppress(OSError):
            for line in (Path("/proc") / str(current) / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def get_json(url: str, headers: dict | None = None, data: bytes | None = None):
    request = urllib.request.Request(url, data=data, headers={**PROXY_HEADERS, **(headers or {})})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, orjson.loads(response.read())


def wait_for(url: str, process: subprocess.Popen, seconds: float = 60, name: str = "") -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"server {name} for {url} exited with {process.returncode}; rerun with --server-log to see why")
        with contextlib.suppress(OSError, ValueError):
            get_json(url)
            return
        time.sleep(0.2)
    sys.exit(f"{url} did not answer within {seconds:.0f} s")


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def git(*arguments: str) -> str:
    completed = subprocess.run(["git", *arguments], cwd=ROOT, capture_output=True, text=True)
    if completed.returncode != 0:
        sys.exit(f"failed: git {' '.join(arguments)}\n{completed.stderr.strip()}")
    return completed.stdout.strip()


@contextlib.contextmanager
def baseline_worktree(commit: str, workdir: Path) -> Iterator[Path]:
    """The old code in a checkout of its own: the work tree and its index are left as they are, and the
    checkout is removed however the run ends (error, Ctrl-C, SIGTERM)."""
    path = workdir / "baseline"
    try:
        log(f"checking out the baseline {commit[:10]} into {path}")
        git("worktree", "add", "--detach", str(path), commit)
        yield path
    finally:
        removed = subprocess.run(
            ["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, capture_output=True, text=True
        )
        if removed.returncode != 0 and path.exists():
            log(f"could not remove the worktree {path}: {removed.stderr.strip()}; run `git worktree prune` later")


# --- the two apps -------------------------------------------------------------------------------------------


def project_env(cache: str, workers: int, multiproc_dir: Path | None) -> dict[str, str]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": SECRET_KEY,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": f"{PG}/{PROJECT_DB}",
        "DB_POOL_MIN": str(PROJECT_POOL_MIN),
        "DB_POOL_MAX": str(PROJECT_POOL_MAX),
        "REDIS_URL": REDIS_URL,
        "RESPONSE_CACHE": "true" if cache == "on" else "false",
        "RATE_LIMIT_READ_LIMIT": UNLIMITED,
        "RATE_LIMIT_WRITE_RATE": UNLIMITED,
        "RATE_LIMIT_WRITE_BURST": UNLIMITED,
        "RATE_LIMIT_AUTH_LIMIT": UNLIMITED,
        # Production's: JSON logs at INFO, one access line per request.
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
        "JWT_ACCESS_TTL_SECONDS": "3600",
    }
    if multiproc_dir is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc_dir)
    return env


def peer_env(users: int, posts_per_user: int) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "ANCHOR_DB": f"{PG.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{PEER_DB}",
        "ANCHOR_USERS": str(users),
        "ANCHOR_POSTS_PER_USER": str(posts_per_user),
        # The peer's own source directory is read-only: no bytecode files next to it.
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def ensure_peer_venv() -> Path:
    python = PEER_VENV / "bin" / "python"
    stamp = PEER_VENV / ".installed"
    if not stamp.exists() or stamp.stat().st_mtime < PEER_REQUIREMENTS.stat().st_mtime:
        log(f"installing the peer's packages into {PEER_VENV.relative_to(ROOT)}")
        if not python.exists():
            run(["python3.11", "-m", "venv", str(PEER_VENV)])
        run([str(python), "-m", "pip", "install", "--quiet", "-r", str(PEER_REQUIREMENTS)])
        stamp.touch()
    return python


def seed(users: int, posts_per_user: int, peer_python: Path) -> None:
    started = time.monotonic()
    for name in (PROJECT_DB, PEER_DB):
        recreate_database(name)
    redis.Redis.from_url(REDIS_URL).flushdb()
    env = project_env("on", 1, None)
    run([PYTHON, "manage.py", "migrate", "--noinput"], env=env)
    run([PYTHON, "manage.py", "seed_demo", "--users", str(users), "--posts-per-user", str(posts_per_user)], env=env)
    run([str(peer_python), "app.py"], env=peer_env(users, posts_per_user), cwd=PEER_APP_DIR)
    # Fresh statistics for both (seed_demo analyzes its own tables; the peer's seeding does not).
    with psycopg.connect(f"{PG}/{PEER_DB}", autocommit=True) as connection:
        connection.execute("ANALYZE")
    log(f"seeded {users} users and {users * posts_per_user} posts in each app ({time.monotonic() - started:.0f} s)")


def start_servers(args, peer_python: Path, workdir: Path, baseline: Path | None) -> dict[str, subprocess.Popen]:
    # Target -> the tree it is served from; the baseline's exactly like the project's, from its worktree.
    project = {"on": ROOT, "off": ROOT}
    if baseline is not None:
        project |= dict.fromkeys(BASELINE, baseline)
    for target in (*project, "peer"):
        if not port_free(PORTS[target]):
            sys.exit(f"port {PORTS[target]} ({target}) is in use")
    servers = {}
    try:
        for target, cwd in project.items():
            cache = BASELINE.get(target, target)
            multiproc = None
            if args.workers > 1:
                multiproc = workdir / f"metrics-{target}"
                multiproc.mkdir()
            env = project_env(cache, args.workers, multiproc)
            if target in BASELINE:
                env["CACHE_KEY_PREFIX"] = f"{env.get('CACHE_KEY_PREFIX', 'app')}-baseline"
            command = [PYTHON, "manage.py", "serve", "--port", str(PORTS[target]), "--workers", str(args.workers)]
            servers[target] = spawn(command, env, cwd, args, f"project-{target}")
        peer_command = [
            str(peer_python), "-m", "uvicorn", "app:app", "--port", str(PORTS["peer"]), "--workers", str(args.workers),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        servers["peer"] = spawn(peer_command, peer_env(args.users, args.posts_per_user), PEER_APP_DIR, args, "peer")
        for target in project:
            wait_for(f"http://127.0.0.1:{PORTS[target]}/health", servers[target], name=target)
        wait_for(f"http://127.0.0.1:{PORTS['peer']}/users/1", servers["peer"], name="peer")
    except BaseException:
        # One server that does not come up must not leave the others running.
        stop_servers(servers)
        raise
    return servers


def spawn(command, env, cwd, args, name) -> subprocess.Popen:
    output = subprocess.DEVNULL
    if args.server_log:
        Path(args.server_log).parent.mkdir(parents=True, exist_ok=True)
        output = open(f"{args.server_log}.{name}.log", "wb")  # noqa: SIM115 (the server's, closed with it)
    # A session of its own: stopping it reaches every worker process and nothing else.
    return subprocess.Popen(command, env=env, cwd=cwd, stdout=output, stderr=output, start_new_session=True)


def stop_servers(servers: dict[str, subprocess.Popen]) -> None:
    for process in servers.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
    for process in servers.values():
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# --- load ---------------------------------------------------------------------------------------------------


def lua_script(paths: list[str], method: str = "GET", body: str | None = None, headers: dict | None = None) -> str:
    lines = [f'wrk.method = "{method}"']
    for name, value in {**PROXY_HEADERS, **(headers or {})}.items():
        lines.append(f'wrk.headers["{name}"] = "{value}"')
    if body is not None:
        lines.append(f"wrk.body = [[{body}]]")
    quoted = ", ".join(f'"{path}"' for path in paths)
    lines += [
        f"local paths = {{{quoted}}}",
        "local i = 0",
        "request = function()",
        "  i = i % #paths + 1",
        "  return wrk.format(nil, paths[i])",
        "end",
    ]
    return "\n".join(lines) + "\n"


_DURATION = re.compile(r"([\d.]+)(us|ms|s|m)$")
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = _DURATION.match(text).groups()
    return float(number) * _UNITS_MS[unit]


def wrk(port: int, script: Path, seconds: float, args) -> Result:
    command = [
        "wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds:g}s", "--latency", "--timeout", "10s",
        "-s", str(script), f"http://127.0.0.1:{port}",
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    percentiles = dict(re.findall(r"^\s*(50|99)(?:\.0+)?%\s+(\S+)\s*$", output, re.M))
    if "50" not in percentiles or "99" not in percentiles:
        sys.exit(f"could not read wrk's output:\n{output}")
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return Result(
        requests_per_second=float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        p50_ms=_ms(percentiles["50"]),
        p99_ms=_ms(percentiles["99"]),
        requests=requests,
        errors=sum(int(n) for n in socket_errors.groups()) if socket_errors else 0,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
    )


class Sampler(threading.Thread):
    """Peak resident memory of each server (all its processes) and peak connections per database, twice a second."""

    def __init__(self, servers: dict[str, subprocess.Popen]) -> None:
        super().__init__(daemon=True)
        self.servers = servers
        self.peak_rss_kib = dict.fromkeys(servers, 0)
        self.peak_connections = {PROJECT_DB: 0, PEER_DB: 0}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            for name, process in self.servers.items():
                self.peak_rss_kib[name] = max(self.peak_rss_kib[name], process_tree_rss_kib(process.pid))
            with contextlib.suppress(psycopg.Error):
                for database, count in database_connections().items():
                    self.peak_connections[database] = max(self.peak_connections[database], count)


# --- the run ------------------------------------------------------------------------------------------------


def discover_ids(count: int) -> dict[str, list[str]]:
    with psycopg.connect(f"{PG}/{PROJECT_DB}") as connection:
        posts = [
            row[0]
            for row in connection.execute(
                "SELECT id FROM posts_post WHERE status = 'published' ORDER BY id LIMIT %s", [count]
            )
        ]
        users = [
            row[0]
            for row in connection.execute(
                "SELECT id FROM accounts_user WHERE is_active AND username LIKE 'demo_user_%%' ORDER BY id LIMIT %s",
                [count],
            )
        ]
    return {
        "post_ids": [f"/api/v1/posts/{pk}" for pk in posts],
        "user_ids": [f"/api/v1/users/{pk}" for pk in users],
        "peer_post_ids": [f"/posts/{pk}" for pk in range(1, count + 1)],
        "peer_user_ids": [f"/users/{pk}" for pk in range(1, count + 1)],
    }


def access_token(port: int) -> str:
    body = orjson.dumps({"username": "demo_user_00001", "password": "demo password"})
    status, answer = get_json(
        f"http://127.0.0.1:{port}/api/v1/auth/token", {"Content-Type": "application/json"}, data=body
    )
    return answer["access_token"]


def scripts_for(row: Row, ids: dict, token: str, workdir: Path) -> dict[str, Path]:
    scripts = {}
    for target in row.targets:
        spec = row.peer_paths if target == "peer" else row.project_paths
        paths = ids.get(spec, [spec])
        if row.method == "POST":
            body = orjson.dumps({"title": "Benchmark post", "body": "written by wrk " * 20, "status": "published"})
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            text = lua_script(paths, "POST", body.decode(), headers)
        else:
            text = lua_script(paths)
        scripts[target] = workdir / f"{row.key}-{target}.lua"
        scripts[target].write_text(text)
    return scripts


def check_responses(row: Row, scripts: dict, ids: dict) -> None:
    """One request per target before measuring: a 4xx would make wrk measure error pages."""
    for target in row.targets:
        if row.method != "GET":
            continue
        spec = row.peer_paths if target == "peer" else row.project_paths
        path = ids.get(spec, [spec])[0]
        status, _ = get_json(f"http://127.0.0.1:{PORTS[target]}{path}")
        if status != 200:
            sys.exit(f"{target} {path}: status {status}")


def leak_waves(args, workdir: Path, ids: dict) -> list[dict[str, int]]:
    """Three waves of load on the list endpoints (the most queries per request), each followed by a pause: the
    connections held afterwards must not grow from wave to wave, nor ever pass workers x pool max."""
    scripts = {
        "off": workdir / "wave-off.lua",
        "peer": workdir / "wave-peer.lua",
    }
    scripts["off"].write_text(lua_script(["/api/v1/posts/?page=3", *ids["post_ids"][:50], *ids["user_ids"][:50]]))
    scripts["peer"].write_text(lua_script(["/posts/?page=3", *ids["peer_post_ids"][:50], *ids["peer_user_ids"][:50]]))
    after = []
    for wave in range(3):
        for target in ("off", "peer"):
            wrk(PORTS[target], scripts[target], args.wave_seconds, args)
        time.sleep(1.0)
        after.append(database_connections())
        log(f"wave {wave + 1}: connections held after it {after[-1]}")
    return after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=1, help="server processes per app (default 1)")
    parser.add_argument("--seconds", type=float, default=10, help="length of each measured round")
    parser.add_argument("--warmup", type=float, default=2, help="unmeasured load per target before a row")
    parser.add_argument("--repeats", type=int, default=2, help="rounds per target and row (alternating)")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--wave-seconds", type=float, default=3)
    parser.add_argument("--large", action="store_true", help="5,000 users and 200,000 posts")
    parser.add_argument("--rows", default=",".join(row.key for row in ROWS), help="comma-separated row keys")
    parser.add_argument("--skip-seed", action="store_true", help="reuse the databases of the previous run")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave RESULTS.md alone")
    parser.add_argument("--output", default=str(BENCH / "RESULTS.md"))
    parser.add_argument("--server-log", help="write the servers' output next to this path instead of discarding it")
    parser.add_argument("--hold", action="store_true", help="after seeding, keep the servers up until Ctrl-C")
    parser.add_argument(
        "--baseline", metavar="REF", help="also serve this git ref (a commit, HEAD~3) and compare the project with it"
    )
    args = parser.parse_args()
    args.users, args.posts_per_user = (5000, 40) if args.large else (1000, 20)
    args.load_before = os.getloadavg()[0]
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    wanted = set(args.rows.split(","))
    rows = [row for row in ROWS if row.key in wanted]
    args.baseline_commit = None
    if args.baseline:
        # Resolved once, before anything runs: a mistyped ref fails here, and a branch that moves during the run
        # does not change what is measured.
        args.baseline_commit = git("rev-parse", "--verify", f"{args.baseline}^{{commit}}")
        args.baseline_short = git("rev-parse", "--short", args.baseline_commit)
        rows = [row.with_baseline() for row in rows]
    # SIGTERM unwinds like Ctrl-C: the servers are stopped and the baseline's worktree removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    started = time.monotonic()
    peer_python = ensure_peer_venv()
    if not args.skip_seed:
        seed(args.users, args.posts_per_user, peer_python)
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        baseline = None
        if args.baseline_commit:
            baseline = stack.enter_context(baseline_worktree(args.baseline_commit, workdir))
        servers = start_servers(args, peer_python, workdir, baseline)
        try:
            log(
                "servers up: "
                + ", ".join(f"{target} {process.pid} (:{PORTS[target]})" for target, process in servers.items())
            )
            if args.hold:
                log("holding; Ctrl-C stops the servers")
                with contextlib.suppress(KeyboardInterrupt):
                    signal.pause()
                return
            ids = discover_ids(1000)
            token = access_token(PORTS["on"])
            sampler = Sampler(servers)
            sampler.start()
            cells: dict[tuple[str, str], Cell] = {}
            for row in rows:
                scripts = scripts_for(row, ids, token, workdir)
                check_responses(row, scripts, ids)
                for target in row.targets:
                    wrk(PORTS[target], scripts[target], args.warmup, args)
                for repeat in range(args.repeats):
                    for target in row.targets:
                        result = wrk(PORTS[target], scripts[target], args.seconds, args)
                        cells.setdefault((row.key, target), Cell()).runs.append(result)
                        log(
                            f"{row.key:7} {target:8} #{repeat + 1}: {result.requests_per_second:8.0f} req/s "
                            f"p50 {result.p50_ms:6.2f} ms p99 {result.p99_ms:7.2f} ms "
                            f"errors {result.errors + result.non_2xx}"
                        )
            waves = leak_waves(args, workdir, ids)
            time.sleep(1.0)
            sampler.stopped.set()
            sampler.join()
            report = render(args, rows, cells, sampler, waves, time.monotonic() - started)
        finally:
            stop_servers(servers)
    print(report)
    if not args.no_write:
        Path(args.output).write_text(report)
        log(f"wrote {args.output}")


# --- the report ---------------------------------------------------------------------------------------------


def render(args, rows, cells, sampler, waves, elapsed: float) -> str:
    workers = args.workers
    names = {"on": "project, cache on", "off": "project, cache off", "peer": "peer"}
    if args.baseline_commit:
        names |= {base: f"baseline ({args.baseline_short}), cache {new}" for base, new in BASELINE.items()}
    # In running text, where the table's names would read as two items each.
    short = {"on": "project (cache on)", "off": "project (cache off)", "peer": "peer"}
    short |= {base: f"baseline (cache {new})" for base, new in BASELINE.items()}
    order = list(dict.fromkeys(target for row in rows for target in row.targets))
    lines = [
        "# Benchmark: the project against the FastAPI peer"
        + (f" and the baseline {args.baseline_short}" if args.baseline_commit else ""),
        "",
        f"One run of `{' '.join(['bench/bench.py', *sys.argv[1:]])}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} cores, load average {args.load_before:.2f} when it started; it took {elapsed:.0f} s.",
        "",
        f"- Data: {args.users:,} users, {args.users * args.posts_per_user:,} posts in each app's database "
        f"(`{PROJECT_DB}`, `{PEER_DB}`) on the same PostgreSQL.",
        f"- Servers: {workers} worker process(es) each. Project: `manage.py serve` (uvicorn, uvloop, httptools), "
        "`DJANGO_DEBUG=false`, JSON access log at INFO, Redis for cache and rate limiter; per process two psycopg "
        f"pools of min {PROJECT_POOL_MIN} / max {PROJECT_POOL_MAX} (`DB_POOL_MIN`/`DB_POOL_MAX`): Django's (writes, "
        "authentication) and the event loop's for reads (`fastpath/db.py`). Peer: `uvicorn app:app` with uvloop and "
        f"httptools, SQLAlchemy async pool 20 + overflow 10 (max {PEER_POOL_MAX}) per process.",
        f"- Load: `wrk -t{args.threads} -c{args.connections}`, {args.seconds:g} s rounds after a {args.warmup:g} s "
        f"warm-up, {args.repeats} rounds per target alternating {', '.join(short[target] for target in order)}; "
        "ids rotate over 1,000 rows. Requests carry `X-Forwarded-Proto: https` (the TLS proxy of production).",
        "- **Rate limits raised for the run** (`RATE_LIMIT_READ_LIMIT`, `RATE_LIMIT_WRITE_RATE`/`_BURST`, "
        f"`RATE_LIMIT_AUTH_LIMIT` = {int(UNLIMITED):,}): one wrk address would otherwise be refused after 100 "
        "reads a minute. The limiter still runs its Redis script on every request.",
        "- Cache off: `RESPONSE_CACHE=false`, every post and user read goes to PostgreSQL. The v1 total of more "
        "than `POSTS_EXACT_COUNT_LIMIT` posts stays cached for `POSTS_COUNT_CACHE_SECONDS` either way (documented "
        "behaviour of the total).",
        "- req/s: mean of the rounds; p50: mean; p99: worst round; errors: socket errors + non-2xx/3xx, all rounds.",
        "- v2 against v1 with the cache on: both pages are cache hits of the same work (the list generation and the "
        "page from Redis, 20 posts rendered), so a few percent either way is this machine's noise; from the database "
        "v2 reads no total.",
    ]
    if args.baseline_commit:
        lines.append(
            f"- Baseline: `{args.baseline}` = commit `{args.baseline_commit[:12]}`, checked out into a detached git "
            "worktree and served from it like the project (same Python, environment, databases and Redis; its cache "
            "keys under a prefix of their own), cache on and off, in the same alternating rounds."
        )
    lines += [
        "",
        "| endpoint | app | req/s | p50 ms | p99 ms | p99/p50 | errors | project/peer |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        peer = cells.get((row.key, "peer"))
        for target in row.targets:
            cell = cells[(row.key, target)]
            ratio = f"{cell.rps / peer.rps:.2f}x" if peer is not None and target != "peer" else ""
            lines.append(
                f"| {row.label if target == row.targets[0] else ''} | {names[target]} | {cell.rps:,.0f} | "
                f"{cell.p50:.2f} | {cell.p99:.2f} | {cell.p99 / cell.p50:.1f} | {cell.errors} | {ratio} |"
            )
    lines += ["", "## Goals", ""]
    # The goals are the project's; the baseline's cells only serve the comparison below.
    lines += goals(rows, {key: cell for key, cell in cells.items() if key[1] not in BASELINE})
    if args.baseline_commit:
        lines += ["", f"## Against the baseline ({args.baseline_short})", ""]
        lines += against_baseline(rows, cells)
    # Per process two pools of DB_POOL_MAX each: Django's (writes, authentication) and fastpath/db.py's (reads).
    # The baseline's servers use the same database: they count towards its connections and its limit.
    project_servers = [target for target in sampler.servers if target != "peer"]
    # The project's servers by their cache mode, the baseline's after them.
    server = {"on": "cache on", "off": "cache off"} | {base: f"baseline cache {new}" for base, new in BASELINE.items()}
    servers_named = ", ".join(server[target] for target in project_servers)
    project_limit = len(project_servers) * workers * 2 * PROJECT_POOL_MAX
    peer_limit = workers * PEER_POOL_MAX
    lines += [
        "",
        "## Connections and memory",
        "",
        f"| | project ({len(project_servers)} servers: {servers_named}) | peer |",
        "|---|---:|---:|",
        f"| PostgreSQL connections, peak during the run | {sampler.peak_connections[PROJECT_DB]} | "
        f"{sampler.peak_connections[PEER_DB]} |",
        f"| limit: servers x workers x pools x pool max | {project_limit} ({len(project_servers)} x {workers} x 2 x "
        f"{PROJECT_POOL_MAX}) | {peer_limit} ({workers} x {PEER_POOL_MAX}) |",
    ]
    for index, counts in enumerate(waves, 1):
        lines.append(f"| held 1 s after load wave {index} of 3 | {counts[PROJECT_DB]} | {counts[PEER_DB]} |")
    leak = any(w[PROJECT_DB] > waves[0][PROJECT_DB] or w[PEER_DB] > waves[0][PEER_DB] for w in waves[1:])
    over = sampler.peak_connections[PROJECT_DB] > project_limit
    memory = ", ".join(f"{server[target]} {sampler.peak_rss_kib[target] / 1024:.0f} MiB" for target in project_servers)
    lines += [
        f"| peak resident memory of the server (all its processes) | {memory} | "
        f"{sampler.peak_rss_kib['peer'] / 1024:.0f} MiB |",
        "",
        f"Connection leak after three waves: **{'yes' if leak else 'no'}** (held connections "
        f"{'grew' if leak else 'did not grow'} from wave to wave); the project "
        f"{'exceeded' if over else 'stayed within'} its pools' bounds.",
        "",
    ]
    return "\n".join(lines)


def goals(rows, cells) -> list[str]:
    lines = []

    def ratio(key, target):
        if (key, target) in cells and (key, "peer") in cells:
            return cells[(key, target)].rps / cells[(key, "peer")].rps
        return None

    for target, name in (("on", "cache on"), ("off", "cache off")):
        for key, goal in (("post", 1.0), ("user", 1.0), ("list", 1.5)):
            value = ratio(key, target)
            if value is not None:
                mark = "met" if value >= goal else "**not met**"
                lines.append(f"- {key} ({name}): {value:.2f}x the peer, goal >= {goal:.1f}x: {mark}")
        if ("cursor", target) in cells and ("list", target) in cells:
            v2, v1 = cells[("cursor", target)].rps, cells[("list", target)].rps
            lines.append(
                f"- v2 cursor faster than v1 list ({name}): {v2:,.0f} vs {v1:,.0f} req/s: "
                f"{'met' if v2 > v1 else '**not met**'}"
            )
    worst = max(cells.items(), key=lambda item: item[1].p99 / item[1].p50)
    within = [c for (key, target), c in cells.items() if target != "peer" and c.p99 <= 3 * c.p50]
    project_cells = [c for (key, target), c in cells.items() if target != "peer"]
    lines.append(
        f"- p99 <= 3x p50 (project): {len(within)} of {len(project_cells)} rows; the highest ratio of any cell is "
        f"{worst[1].p99 / worst[1].p50:.1f} ({worst[0][0]}, {worst[0][1]})"
    )
    errors = sum(c.errors for c in project_cells)
    lines.append(f"- no errors (project): {'met' if errors == 0 else f'**not met** ({errors})'}")
    return lines


def against_baseline(rows, cells) -> list[str]:
    """New/base req/s of each row, cache on and off: the change's effect, with the machine's drift in both."""
    lines = [
        f"New/base: the project's req/s over the baseline's in the same rounds; within 5 %: new/base >= "
        f"{BASELINE_TOLERANCE}.",
        "",
        "| endpoint | cache on: new/base | within 5 % | cache off: new/base | within 5 % |",
        "|---|---:|:---:|---:|:---:|",
    ]
    slower = []
    for row in rows:
        columns = []
        for base, new in BASELINE.items():
            if (row.key, new) not in cells or (row.key, base) not in cells:
                columns += ["", ""]
                continue
            new_rps, base_rps = cells[(row.key, new)].rps, cells[(row.key, base)].rps
            ratio = new_rps / base_rps
            within = ratio >= BASELINE_TOLERANCE
            if not within:
                slower.append(f"{row.key} (cache {new}, {ratio:.2f}x)")
            columns += [f"{ratio:.2f}x ({new_rps:,.0f} / {base_rps:,.0f})", "yes" if within else "**no**"]
        if any(columns):
            lines.append(f"| {row.label} | {' | '.join(columns)} |")
    lines += [
        "",
        f"- every row within 5 % of the baseline: {'met' if not slower else '**not met**: ' + ', '.join(slower)}",
    ]
    return lines


if __name__ == "__main__":
    main()
