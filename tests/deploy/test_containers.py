"""The containers of k8s/ run for real: each one's own script, with the environment Kubernetes would give it (the
ConfigMap, the Secret, the container's `env` with $(VAR) expansion), against this run's PostgreSQL and Redis.

Only what cannot exist outside a cluster is replaced: the database and Redis addresses, a real secret key, the
image's paths (/app/...) by temporary directories, the pod IP by 127.0.0.1, and listening ports by free ones.
"""

import json
import os
import re
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import child_process_env
from tests.deploy import k8s
from tests.deploy.test_dockerfile import instructions
from tests.helpers import BIN, PROJECT_ROOT, clean_env, free_port, stop_process

pytestmark = pytest.mark.django_db(transaction=True)

POD_IP = "127.0.0.1"


def pod_environment(workload_name: str, tmp_path, **overrides: str) -> dict[str, str]:
    workload = next(w for w in k8s.workloads() if w["metadata"]["name"] == workload_name)
    container = k8s.container(workload)
    local = child_process_env()
    env = clean_env(PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    # envFrom first, then env in order, each $(VAR) expanded from what is defined so far: the kubelet's order.
    env.update(k8s.config_data())
    env.update(k8s.secret_data())
    for variable in container.get("env", []):
        env[variable["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), variable["value"])
    for name in ("DJANGO_DATA_DIR", "DJANGO_MEDIA_ROOT", "DJANGO_STATIC_ROOT", "PROMETHEUS_MULTIPROC_DIR"):
        if name in env:
            directory = tmp_path / name.lower()
            directory.mkdir()
            env[name] = str(directory)
    env.update(
        DATABASE_URL=local["DATABASE_URL"],
        REDIS_URL=local["REDIS_URL"],
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        EMAIL_HOST="127.0.0.1",
    )
    env.update(overrides)
    return env


def run_script(script: str, env: dict[str, str], **popen) -> subprocess.Popen:
    return subprocess.Popen(["sh", "-c", script], cwd=PROJECT_ROOT, env=env, **popen)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # the redirect itself is what is checked


_opener = urllib.request.build_opener(_NoRedirects)


def request(url: str, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with _opener.open(req, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}


def wait_for(url: str, process: subprocess.Popen, log, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            request(url)
            return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process)
            raise AssertionError(f"{url} never answered:\n{log.read_text()}")
        time.sleep(0.3)


# --- the migrate Job ---------------------------------------------------------------------------------------------


def migrate_script() -> str:
    return k8s.container_script(k8s.container(k8s.get("Job", "migrate")))


def test_the_migrate_job_refuses_the_secret_template_s_placeholder_key(tmp_path):
    env = pod_environment("migrate", tmp_path, DJANGO_SECRET_KEY=k8s.secret_data()["DJANGO_SECRET_KEY"])
    result = subprocess.run(
        ["sh", "-c", migrate_script()], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "security.W009" in output  # the key is too short and too simple to be a secret
    assert "Operations to perform" not in output, "migrations must not run after a failed check"


def test_the_migrate_job_checks_the_production_settings_then_migrates(tmp_path):
    env = pod_environment("migrate", tmp_path)
    result = subprocess.run(
        ["sh", "-c", migrate_script()], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues" in output
    assert "Operations to perform" in output


# --- the web server ------------------------------------------------------------------------------------------


@pytest.fixture
def web_pod(tmp_path):
    """The web container's script, on a free port instead of 8000."""
    container = k8s.container(k8s.get("Deployment", "web"))
    port = free_port()
    declared = k8s.container_port(container, "http")
    script = k8s.container_script(container).replace(f"--port {declared}", f"--port {port}")
    assert f"--port {port}" in script
    log = tmp_path / "web.log"
    with log.open("w") as output:
        process = run_script(script, pod_environment("web", tmp_path), stdout=output, stderr=subprocess.STDOUT)
    base = f"http://{POD_IP}:{port}"
    wait_for(f"{base}/health", process, log)
    yield process, base, port
    stop_process(process)


def test_the_web_container_serves_its_probes_and_refuses_what_it_should(web_pod):
    process, base, _ = web_pod
    # Kubelet probes address the pod by IP (the Host header is the pod's address).
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        path = k8s.container(k8s.get("Deployment", "web"))[probe]["httpGet"]["path"]
        assert request(f"{base}{path}")[0] == 200, probe
    # Prometheus, from the pod network: allowed. The same through a proxy: refused.
    assert request(f"{base}/metrics")[0] == 200
    assert request(f"{base}/metrics", {"X-Forwarded-For": "203.0.113.9"})[0] == 403
    # What the ingress controller sends through the mesh: the Service's name as Host, the client's HTTPS scheme.
    ingress = k8s.get("Ingress", "backend")["metadata"]["annotations"]
    vhost = ingress["nginx.ingress.kubernetes.io/upstream-vhost"]
    # Production settings: plain HTTP to the API is redirected; other hosts, the pod's address included, refused.
    status, headers = request(f"{base}/api/v2/posts", {"Host": vhost})
    assert status == 301 and headers["location"].startswith("https://")
    assert request(f"{base}/api/v2/posts", {"Host": "evil.example"})[0] == 400
    assert request(f"{base}/api/v2/posts")[0] == 400
    forwarded = {"Host": vhost, "X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    assert request(f"{base}/api/v2/posts", forwarded)[0] == 200
    # The admin's and the API docs' static files come from the image, with no web server in front.
    assert request(f"{base}/static/admin/css/base.css", forwarded)[0] == 200


def test_the_image_s_healthcheck_passes_against_the_web_container(web_pod):
    _, _, port = web_pod
    (healthcheck,) = [arguments for name, arguments in instructions() if name == "HEALTHCHECK"]
    command = json.loads(healthcheck.split("CMD", 1)[1])  # the exec form
    command[-1] = command[-1].replace(":8000/", f":{port}/")
    command[0] = str(BIN / "python")
    assert subprocess.run(command, timeout=30).returncode == 0
    closed = [*command[:-1], command[-1].replace(f":{port}/", f":{free_port()}/")]
    assert subprocess.run(closed, capture_output=True, timeout=30).returncode != 0


def test_sigterm_reaches_the_server_through_the_script_and_it_exits_in_time(web_pod):
    process, base, _ = web_pod
    data = k8s.config_data()
    budget = int(data["SHUTDOWN_DRAIN_SECONDS"]) + int(data["SHUTDOWN_GRACE_SECONDS"])
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)  # what tini forwards: the script exec'd the server, so it is this process
    time.sleep(1)
    assert request(f"{base}/ready")[0] == 503
    assert process.wait(timeout=budget + 5) == 0
    # Nothing to finish: the server stops when its drain phase ends, well within the budget.
    assert time.monotonic() - started < budget


# --- the Celery worker ---------------------------------------------------------------------------------------


def test_the_worker_container_serves_the_metrics_its_probes_call(tmp_path):
    container = k8s.container(k8s.get("Deployment", "worker"))
    port = free_port()
    env = pod_environment("worker", tmp_path, WORKER_METRICS_PORT=str(port))
    log = tmp_path / "worker.log"
    with log.open("w") as output:
        process = run_script(k8s.container_script(container), env, stdout=output, stderr=subprocess.STDOUT)
    try:
        path = container["livenessProbe"]["httpGet"]["path"]
        wait_for(f"http://{POD_IP}:{port}{path}", process, log, timeout=90)
        status, headers = request(f"http://{POD_IP}:{port}{path}")
        assert status == 200 and headers["content-type"].startswith("text/plain")
        # The pool's processes write their samples where the container says.
        assert any((tmp_path / "prometheus_multiproc_dir").iterdir())
        # Celery installs its SIGTERM handler (warm shutdown) once the worker is up, after the metrics server.
        deadline = time.monotonic() + 60
        while not re.search(r"celery@\S+ ready\.", log.read_text()):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)  # the warm shutdown, reached through the script's exec
        assert process.wait(timeout=60) == 0, log.read_text()
    finally:
        stop_process(process)


# --- Celery beat ---------------------------------------------------------------------------------------------


def test_beat_keeps_its_schedule_in_the_data_volume_and_stops_on_sigterm(tmp_path):
    """The root filesystem is read-only in the pod: beat may write only to the data directory, a volume."""
    container = k8s.container(k8s.get("Deployment", "beat"))
    env = pod_environment("beat", tmp_path)
    data_dir = tmp_path / "django_data_dir"
    log = tmp_path / "beat.log"
    with log.open("w") as output:
        process = run_script(k8s.container_script(container), env, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not any(path.name.startswith("celerybeat-schedule") for path in data_dir.iterdir()):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        stop_process(process)
    # Its working directory is the code's, read-only in the pod: no schedule or pid file may land there.
    assert not list(PROJECT_ROOT.glob("celerybeat*")), "beat wrote into the code's directory"
