"""The Dockerfile, checked without a Docker engine: hadolint, its structure, and the dependency set it installs."""

import json
import os
import re
import shlex
import subprocess
from importlib import metadata

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy import k8s
from tests.helpers import BIN, PROJECT_ROOT, clean_env

DOCKERFILE = PROJECT_ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        current += " " + stripped[:-1] if stripped.endswith("\\") else " " + stripped
        if not stripped.endswith("\\"):
            joined.append(current.strip())
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in joined]


def exec_form(instruction: str) -> list[str]:
    values = [arguments for name, arguments in instructions() if name == instruction]
    assert values, f"no {instruction}"
    parsed = json.loads(values[-1])  # exec form: a JSON array, no shell to swallow SIGTERM
    assert isinstance(parsed, list)
    return parsed


def test_hadolint_passes():
    result = subprocess.run(
        [str(BIN / "hadolint"), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_report_problems(tmp_path):
    """hadolint runs and can fail: the test above is not passing because the linter does nothing."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install curl\nCMD python app.py\n")
    result = subprocess.run([str(BIN / "hadolint"), "--no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # untagged base image


def test_multi_stage_on_the_slim_python_3_11_base():
    stages = [arguments for name, arguments in instructions() if name == "FROM"]
    assert len(stages) >= 2, "build and runtime stages"
    base = next(arguments.split("=", 1)[1] for name, arguments in instructions() if name == "ARG")
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base), base
    assert all(stage.startswith("${PYTHON_IMAGE}") for stage in stages)
    # Only the virtualenv and the code reach the runtime stage: no build tooling, no pip cache.
    copies = [arguments for name, arguments in instructions() if name == "COPY"]
    assert "--from=build /opt/venv /opt/venv" in copies


def test_exact_pins_are_installed_and_nothing_else():
    runs = " ".join(arguments for name, arguments in instructions() if name == "RUN")
    assert "--no-deps" in runs and "-r /tmp/requirements.txt" in runs and "pip check" in runs


def pinned(path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-r"):
            continue
        requirement = Requirement(line)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{line}: pin it exactly"
        pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def test_requirements_pin_every_dependency_of_every_pinned_package():
    """The image installs requirements.txt with --no-deps: it must hold the whole dependency closure (read from the
    metadata of the same versions, installed in this virtualenv) or the image would miss a package."""
    pins = pinned(PROJECT_ROOT / "requirements.txt")
    environment = default_environment()
    extras_wanted = {}
    for line in (PROJECT_ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            extras_wanted[canonicalize_name(requirement.name)] = set(requirement.extras)
    missing = []
    for name, version in pins.items():
        distribution = metadata.distribution(name)
        assert distribution.version == version, f"{name}: {distribution.version} installed, {version} pinned"
        for raw in distribution.requires or []:
            requirement = Requirement(raw)
            wanted = extras_wanted.get(name, set())
            if requirement.marker and not any(
                requirement.marker.evaluate({**environment, "extra": extra}) for extra in (wanted or {""})
            ):
                continue
            dependency = canonicalize_name(requirement.name)
            if dependency not in pins:
                missing.append(f"{name} needs {raw}")
            elif not requirement.specifier.contains(pins[dependency], prereleases=True):
                missing.append(f"{name} needs {raw}, {pins[dependency]} is pinned")
    assert not missing, missing


def test_runs_as_the_unprivileged_numeric_user_the_pods_expect():
    users = [arguments for name, arguments in instructions() if name == "USER"]
    assert users == ["10001:10001"]
    for workload in k8s.workloads():
        assert k8s.pod_template(workload)["spec"]["securityContext"]["runAsUser"] == 10001


def test_the_entrypoint_forwards_signals_and_the_default_command_is_the_web_server():
    assert exec_form("ENTRYPOINT") == ["/usr/bin/tini", "--"]
    command = exec_form("CMD")
    assert command[:3] == ["python", "manage.py", "serve"]
    port = k8s.option(command, "--port")
    assert port in {arguments for name, arguments in instructions() if name == "EXPOSE"}
    web = k8s.exec_line(k8s.container(k8s.get("Deployment", "web")))
    assert web == command, "the pods run the image's own server command"


def test_the_healthcheck_calls_health_on_the_server_port():
    (healthcheck,) = [arguments for name, arguments in instructions() if name == "HEALTHCHECK"]
    command = json.loads(healthcheck.split("CMD", 1)[1])
    port = k8s.option(exec_form("CMD"), "--port")
    assert f"http://127.0.0.1:{port}/health" in command[-1]


def test_static_files_are_collected_at_build_with_no_secret_baked_in():
    runs = [arguments for name, arguments in instructions() if name == "RUN"]
    assert any("manage.py collectstatic --noinput" in run for run in runs)
    baked = [arguments for name, arguments in instructions() if name in {"ENV", "ARG"}]
    for arguments in baked:
        assert not re.search(r"SECRET|PASSWORD|TOKEN|DATABASE_URL|REDIS_URL|SIGNING_KEY", arguments), arguments
        assert "DJANGO_DEBUG" not in arguments, "DEBUG must not be part of the image's environment"


def test_the_build_context_leaves_out_local_state_and_secrets():
    ignored = set((PROJECT_ROOT / ".dockerignore").read_text().split())
    assert {".git", ".env", "**/.venv*", "var", "staticfiles", "tests", "k8s"} <= ignored


def image_environment() -> dict[str, str]:
    """The runtime stage's ENV (the last stage's instructions), as KEY=value pairs."""
    runtime = instructions()
    last_from = max(i for i, (name, _) in enumerate(runtime) if name == "FROM")
    env = {}
    for name, arguments in runtime[last_from:]:
        if name == "ENV":
            for pair in shlex.split(arguments):
                key, value = pair.split("=", 1)
                env[key] = value
    return env


def test_collectstatic_runs_as_in_the_build_with_no_service_and_no_secret(tmp_path):
    """The build's RUN line works with nothing but the image's environment: no database, no Redis, no secret."""
    (command,) = [
        part.strip()
        for name, arguments in instructions()
        if name == "RUN"
        for part in arguments.split("&&")
        if "collectstatic" in part
    ]
    env = clean_env(**image_environment())
    env["PATH"] = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    env["DJANGO_DATA_DIR"] = str(tmp_path / "var")
    env["DJANGO_STATIC_ROOT"] = str(tmp_path / "static")
    result = subprocess.run(
        ["sh", "-c", command], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "static" / "admin" / "css" / "base.css").is_file()
    assert (tmp_path / "static" / "chat").is_dir()
