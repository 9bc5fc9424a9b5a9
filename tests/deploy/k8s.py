"""The manifests in k8s/ as `kubectl apply -k k8s/` would send them, and what the code reads from the environment.

Rendering does what the kustomization asks (it uses only `namespace`, `resources` and `images`, and
test_manifests.py fails if it starts using anything else), so the tests see the objects the cluster would get.
"""

import ast
import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from tests.helpers import PROJECT_ROOT

K8S_DIR = PROJECT_ROOT / "k8s"
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "namespace", "resources", "images"}
# Kinds without a namespace: kustomize's namespace transformer leaves them alone.
CLUSTER_SCOPED = {"Namespace"}
ISTIO_GROUP = "networking.istio.io/"
# The env_* helpers of config/env.py: every call names the variable it reads as its first argument.
ENV_HELPERS = {"env_str", "env_int", "env_bool", "env_list"}
# Where the project's own code lives (not tests, benchmarks or virtualenvs).
CODE_EXCLUDED_DIRS = {"tests", "bench", "k8s", "migrations", "staticfiles", "var", "node_modules"}


@cache
def kustomization() -> dict:
    return yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())


@cache
def rendered() -> tuple[dict, ...]:
    spec = kustomization()
    namespace = spec["namespace"]
    images = {image["name"]: image for image in spec.get("images", [])}
    objects = []
    for filename in spec["resources"]:
        for document in yaml.safe_load_all((K8S_DIR / filename).read_text()):
            if document is None:
                continue
            document["metadata"].setdefault("annotations", None)
            if document["metadata"]["annotations"] is None:
                del document["metadata"]["annotations"]
            if document["kind"] not in CLUSTER_SCOPED:
                document["metadata"]["namespace"] = namespace
            for container in _all_containers(document):
                name = container["image"].split(":")[0]
                if name in images:
                    image = images[name]
                    container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
            document["__file__"] = filename
            objects.append(document)
    return tuple(objects)


def without_source(document: dict) -> dict:
    return {key: value for key, value in document.items() if key != "__file__"}


def _all_containers(document: dict) -> list[dict]:
    template = pod_template(document)
    if template is None:
        return []
    spec = template["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def pod_template(document: dict) -> dict | None:
    if document["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        return document["spec"]["template"]
    return None


def objects(kind: str) -> list[dict]:
    return [document for document in rendered() if document["kind"] == kind]


def get(kind: str, name: str) -> dict:
    matches = [document for document in objects(kind) if document["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} named {name}, found {len(matches)}"
    return matches[0]


def workloads() -> list[dict]:
    return [document for document in rendered() if pod_template(document) is not None]


def container(workload: dict, name: str | None = None) -> dict:
    containers = pod_template(workload)["spec"]["containers"]
    if name is None:
        assert len(containers) == 1, f"{workload['metadata']['name']} has several containers"
        return containers[0]
    return next(c for c in containers if c["name"] == name)


def config_data() -> dict[str, str]:
    return get("ConfigMap", "backend-config")["data"]


def secret_data() -> dict[str, str]:
    return get("Secret", "backend-secrets")["stringData"]


def selects(selector: dict, labels: dict) -> bool:
    """Whether a label selector (matchLabels / matchExpressions, or a plain map as in a Service) selects `labels`."""
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def container_script(container_spec: dict) -> str:
    """The shell script a container runs (`args: [sh, -c, script]`), or its args as one `exec` line: in the pod
    they are the process itself, so a signal sent to the script must reach them, not a shell in between."""
    args = container_spec["args"]
    if args[:2] == ["sh", "-c"]:
        return args[2]
    return "exec " + shlex.join(args)


def exec_line(container_spec: dict) -> list[str]:
    """The command the container ends up running: the script's `exec` line, or its args."""
    args = container_spec["args"]
    if args[:2] != ["sh", "-c"]:
        return list(args)
    lines = [line.strip() for line in args[2].splitlines() if line.strip().startswith("exec ")]
    assert len(lines) == 1, f"{container_spec['name']}: expected one `exec` line in its script"
    return shlex.split(lines[0])[1:]


def option(argv: list[str], name: str) -> str | None:
    """The value of `--name value` or `--name=value` in argv."""
    for index, arg in enumerate(argv):
        if arg == name:
            return argv[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def container_port(container_spec: dict, port) -> int:
    """A port given by number or by name, as the container declares it."""
    if isinstance(port, int):
        assert any(p["containerPort"] == port for p in container_spec.get("ports", [])), port
        return port
    matches = [p["containerPort"] for p in container_spec.get("ports", []) if p.get("name") == port]
    assert matches, f"{container_spec['name']} declares no port named {port!r}"
    return matches[0]


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")


def seconds(duration: str) -> float:
    match = _DURATION.match(duration)
    assert match, f"not a duration: {duration!r}"
    value, unit = float(match[1]), match[2]
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


# --- what the code reads -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvRead:
    name: str
    where: str


def code_files() -> list[Path]:
    files = []
    for path in sorted(PROJECT_ROOT.rglob("*.py")):
        parts = path.relative_to(PROJECT_ROOT).parts
        if any(part in CODE_EXCLUDED_DIRS or part.startswith(".") for part in parts[:-1]):
            continue
        files.append(path)
    return files


def _is_os_environ(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def _reads_a_variable(func: ast.AST) -> bool:
    """env_str(...) and the other helpers, os.environ.get(...) / .pop(...), os.getenv(...)."""
    if isinstance(func, ast.Name):
        return func.id in ENV_HELPERS
    if not isinstance(func, ast.Attribute):
        return False
    if func.attr in ENV_HELPERS:
        return True
    if _is_os_environ(func.value) and func.attr in {"get", "pop"}:
        return True
    return func.attr == "getenv" and isinstance(func.value, ast.Name) and func.value.id == "os"


def env_reads(path: Path) -> tuple[list[EnvRead], list[str]]:
    """Variables read in one module: env_* helper calls, os.environ.get / [] / `in`, os.getenv. Returns the reads
    and the places that read a variable whose name is not a string literal (which the caller must refuse)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    relative = path.relative_to(PROJECT_ROOT)
    reads, unknown = [], []
    # config/env.py defines the helpers: the names it reads are its callers' arguments.
    helper_bodies = set()
    if relative == Path("config/env.py"):
        helper_bodies = {id(node) for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}

    def name_of(argument: ast.AST | None, node: ast.AST) -> None:
        where = f"{relative}:{node.lineno}"
        if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
            reads.append(EnvRead(argument.value, where))
        else:
            unknown.append(where)

    skip = set()
    for function in ast.walk(tree):
        if id(function) in helper_bodies:
            skip |= {id(node) for node in ast.walk(function)}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Call):
            if _reads_a_variable(node.func):
                name_of(node.args[0] if node.args else None, node)
        elif isinstance(node, ast.Subscript) and _is_os_environ(node.value) and isinstance(node.ctx, ast.Load):
            name_of(node.slice, node)
        elif isinstance(node, ast.Compare) and any(_is_os_environ(c) for c in node.comparators):
            name_of(node.left, node)
    return reads, unknown


def variables_read_by_the_code() -> dict[str, list[str]]:
    """Every environment variable the project's code reads, with where."""
    found: dict[str, list[str]] = {}
    unknown = []
    for path in code_files():
        reads, not_literal = env_reads(path)
        unknown += not_literal
        for read in reads:
            found.setdefault(read.name, []).append(read.where)
    assert not unknown, f"environment reads whose variable name is not a literal (name it): {unknown}"
    return found
