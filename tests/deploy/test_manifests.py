"""k8s/ is valid for the cluster it targets and consistent with the code it deploys (no cluster needed).

Kubernetes objects are validated offline against the schemas kubernetes-validate bundles; the Istio objects, whose
schemas are CRDs, are checked here for the fields they need.
"""

import copy
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from django.urls import Resolver404, resolve

from core import health
from tests.deploy import k8s
from tests.helpers import PROJECT_ROOT

# The cluster versions validated against: the oldest supported (1.31: the preStop `sleep` action is on by default
# from 1.30) and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.31", kubernetes_validate.utils.major_minor(kubernetes_validate.utils.latest_version()))

# Variables the code reads that k8s/ deliberately does not set, and why. Everything else the code reads must be in
# the ConfigMap or the Secret: a setting added later fails test_every_variable_the_code_reads_is_provided until
# k8s/configmap.yaml (or secret.yaml) provides it, or it is added here with its reason.
NOT_SET_IN_KUBERNETES = {
    # Tracing is off until an operator points it at a collector (README, Observability): the address is theirs.
    "OTEL_EXPORTER_OTLP_ENDPOINT": "tracing is turned on by setting the collector's address",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "as OTEL_EXPORTER_OTLP_ENDPOINT, for traces only",
    "OTEL_TRACES_EXPORTER": "chosen from the endpoint; `console`/`none` are for development",
    "OTEL_SDK_DISABLED": "tracing is already off without an endpoint",
    # Only the file email backend reads it; production sends through SMTP.
    "EMAIL_FILE_PATH": "read by the file email backend only",
    # One server process per web pod needs no multiprocess metrics; the worker's prefork pool does, so
    # worker.yaml sets it on that container (test_worker_metrics_are_collected_across_the_pool).
    "PROMETHEUS_MULTIPROC_DIR": "set per container, on the worker only",
    # The test suite's check of fast response bodies: a second pydantic pass per request, never for production.
    "FAST_PATH_CHECK_BODIES": "a test-suite check",
}

WEB_SERVICE = "backend-web"
# The retry conditions under which a request never reached the application: safe to retry for any method.
SAFE_FOR_ANY_METHOD = {"connect-failure", "refused-stream"}
IDEMPOTENT_METHODS = {"GET", "HEAD", "OPTIONS"}


def manifest_id(document: dict) -> str:
    return f"{document['kind']}/{document['metadata']['name']}"


KUBERNETES_OBJECTS = [d for d in k8s.rendered() if not d["apiVersion"].startswith(k8s.ISTIO_GROUP)]
ISTIO_OBJECTS = [d for d in k8s.rendered() if d["apiVersion"].startswith(k8s.ISTIO_GROUP)]


def web_fqdn() -> str:
    return f"{WEB_SERVICE}.{k8s.kustomization()['namespace']}.svc.cluster.local"


def web_workloads() -> list[dict]:
    service = k8s.get("Service", WEB_SERVICE)
    return [w for w in k8s.objects("Deployment") if k8s.selects(service["spec"]["selector"], labels_of(w))]


def labels_of(workload: dict) -> dict:
    return k8s.pod_template(workload)["metadata"]["labels"]


# --- the kustomization and the schemas ---------------------------------------------------------------------------


def test_the_kustomization_lists_every_manifest_and_uses_only_what_the_tests_render():
    spec = k8s.kustomization()
    assert set(spec) <= k8s.KUSTOMIZATION_KEYS, set(spec) - k8s.KUSTOMIZATION_KEYS
    files = {path.name for path in k8s.K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(spec["resources"]) == sorted(files)
    names = [manifest_id(document) for document in k8s.rendered()]
    assert len(names) == len(set(names)), "two objects of the same kind and name"
    assert k8s.get("Namespace", spec["namespace"])


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("document", KUBERNETES_OBJECTS, ids=manifest_id)
def test_every_kubernetes_object_validates_against_the_schemas(document, version):
    # Strict: a misspelt or misplaced field is an error, not silently ignored by the API server.
    kubernetes_validate.validate(k8s.without_source(document), version, strict=True)


def test_the_validator_refuses_what_the_api_server_would():
    """The schema check above can fail: unknown fields and wrong types are errors."""
    web = k8s.without_source(copy.deepcopy(k8s.get("Deployment", "web")))
    web["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/ready"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(web, KUBERNETES_VERSIONS[0], strict=True)
    web = k8s.without_source(copy.deepcopy(k8s.get("Deployment", "beat")))
    web["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(web, KUBERNETES_VERSIONS[0], strict=True)


def test_every_container_runs_the_one_image_the_kustomization_sets():
    images = {image["name"]: image for image in k8s.kustomization()["images"]}
    raw = [
        c["image"]
        for filename in k8s.kustomization()["resources"]
        for document in yaml.safe_load_all((k8s.K8S_DIR / filename).read_text())
        if document and k8s.pod_template(document)
        for c in k8s.pod_template(document)["spec"]["containers"]
    ]
    # Manifests name the image only; the kustomization gives repository and tag (the one edit per release).
    assert set(raw) == set(images) == {"backend", "backend-canary"}
    rendered = {c["image"] for w in k8s.workloads() for c in k8s.pod_template(w)["spec"]["containers"]}
    assert all(re.fullmatch(r"[a-z0-9.\-/:]+:[\w.\-]+", image) for image in rendered), rendered


# --- labels, selectors, ports --------------------------------------------------------------------------------


@pytest.mark.parametrize("workload", k8s.workloads(), ids=manifest_id)
def test_each_workload_selects_its_own_pods_and_no_other_workloads(workload):
    if workload["kind"] == "Job":
        return  # a Job's selector is generated
    selector = workload["spec"]["selector"]
    assert k8s.selects(selector, labels_of(workload))
    others = [w for w in k8s.workloads() if w is not workload and k8s.selects(selector, labels_of(w))]
    assert not others, f"{manifest_id(workload)} would adopt the pods of {[manifest_id(o) for o in others]}"


def test_the_web_service_selects_both_web_tracks_and_nothing_else():
    assert sorted(w["metadata"]["name"] for w in web_workloads()) == ["web", "web-canary"]
    assert {labels_of(w)["track"] for w in web_workloads()} == {"stable", "canary"}


def test_the_service_port_leads_to_the_port_the_server_listens_on():
    service = k8s.get("Service", WEB_SERVICE)
    (port,) = service["spec"]["ports"]
    for workload in web_workloads():
        container = k8s.container(workload)
        target = k8s.container_port(container, port["targetPort"])
        argv = k8s.exec_line(container)
        assert argv[:3] == ["python", "manage.py", "serve"], argv
        assert int(k8s.option(argv, "--port")) == target
        # Reachable from other pods, not only from the pod's loopback.
        assert k8s.option(argv, "--host") == "0.0.0.0"
        # One server process per pod: `--workers` has no drain phase (README, Serving).
        assert k8s.option(argv, "--workers") in (None, "1")
    ingress = k8s.get("Ingress", "backend")
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == WEB_SERVICE
            assert backend["port"] in ({"name": port["name"]}, {"number": port["port"]})


@pytest.mark.parametrize("workload", web_workloads(), ids=manifest_id)
def test_web_probes_call_the_app_s_health_and_readiness_views(workload):
    container = k8s.container(workload)
    views = {}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        k8s.container_port(container, get["port"])
        try:
            views[probe] = resolve(get["path"]).func
        except Resolver404:
            pytest.fail(f"{probe} path {get['path']} does not exist in config/urls.py")
    # Liveness and startup must not depend on PostgreSQL or Redis (an outage would restart every pod).
    assert views == {"startupProbe": health.health, "readinessProbe": health.ready, "livenessProbe": health.health}


def test_the_readiness_probe_waits_longer_than_the_readiness_checks():
    timeout_ms = int(k8s.config_data()["READY_CHECK_TIMEOUT_MS"])
    for workload in web_workloads():
        assert k8s.container(workload)["readinessProbe"]["timeoutSeconds"] * 1000 > timeout_ms


def test_worker_probes_and_scrapes_use_the_worker_metrics_port():
    worker = k8s.get("Deployment", "worker")
    container = k8s.container(worker)
    port = int(k8s.config_data()["WORKER_METRICS_PORT"])
    assert k8s.container_port(container, "metrics") == port
    for probe in ("startupProbe", "livenessProbe"):
        assert k8s.container_port(container, container[probe]["httpGet"]["port"]) == port
    annotations = k8s.pod_template(worker)["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    assert k8s.config_data()["WORKER_METRICS_HOST"] == "0.0.0.0"


def test_web_scrape_annotations_point_at_the_metrics_view():
    for workload in web_workloads():
        annotations = k8s.pod_template(workload)["metadata"]["annotations"]
        container = k8s.container(workload)
        assert int(annotations["prometheus.io/port"]) == k8s.container_port(container, "http")
        assert resolve(annotations["prometheus.io/path"]).url_name == "metrics"


def test_the_worker_and_beat_run_celery_with_the_project_app():
    worker = k8s.exec_line(k8s.container(k8s.get("Deployment", "worker")))
    assert worker[:4] == ["celery", "-A", "config", "worker"]
    # Celery would otherwise start one process per CPU of the node, whatever the pod's limit.
    assert k8s.option(worker, "--concurrency")
    beat = k8s.exec_line(k8s.container(k8s.get("Deployment", "beat")))
    assert beat[:4] == ["celery", "-A", "config", "beat"]


def test_exactly_one_beat_and_it_never_overlaps_itself():
    beat = k8s.get("Deployment", "beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    autoscaled = {h["spec"]["scaleTargetRef"]["name"] for h in k8s.objects("HorizontalPodAutoscaler")}
    assert "beat" not in autoscaled


def test_autoscalers_own_the_replica_counts_of_what_they_scale():
    for hpa in k8s.objects("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        target = k8s.get(ref["kind"], ref["name"])
        assert ref["apiVersion"] == target["apiVersion"]
        # An apply would otherwise reset the autoscaler's count to the manifest's at every deploy.
        assert "replicas" not in target["spec"], f"{ref['name']} sets replicas but is autoscaled"
        assert hpa["spec"]["minReplicas"] >= 2, "one replica cannot drain while another serves"
        resources = {m["resource"]["name"] for m in hpa["spec"]["metrics"]}
        assert resources == {"cpu", "memory"}
        # Utilization is a share of the request: every container must request both.
        for container in k8s.pod_template(target)["spec"]["containers"]:
            assert set(container["resources"]["requests"]) >= resources
    assert {h["spec"]["scaleTargetRef"]["name"] for h in k8s.objects("HorizontalPodAutoscaler")} == {"web", "worker"}


def test_disruption_budgets_cover_web_and_worker_pods():
    covered = set()
    for pdb in k8s.objects("PodDisruptionBudget"):
        matched = [w for w in k8s.objects("Deployment") if k8s.selects(pdb["spec"]["selector"], labels_of(w))]
        assert matched, f"{manifest_id(pdb)} selects no pods"
        covered |= {w["metadata"]["name"] for w in matched}
    assert covered == {"web", "web-canary", "worker"}


def test_the_canary_runs_the_same_pod_as_web_apart_from_its_image_and_track():
    stable, canary = k8s.get("Deployment", "web"), k8s.get("Deployment", "web-canary")

    def comparable(workload: dict, track: str) -> dict:
        template = copy.deepcopy(k8s.pod_template(workload))
        assert template["metadata"]["labels"].pop("track") == track
        for container in template["spec"]["containers"]:
            container.pop("image")
        return template

    assert comparable(stable, "stable") == comparable(canary, "canary")
    assert canary["spec"]["replicas"] == 0, "the canary takes traffic only once scaled up on purpose"


# --- environment: ConfigMap and Secret against the code -------------------------------------------------------


def provided_to(container: dict) -> set[str]:
    names = set()
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            names |= set(k8s.get("ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            names |= set(k8s.get("Secret", source["secretRef"]["name"])["stringData"])
    return names | {variable["name"] for variable in container.get("env", [])}


def test_the_code_s_environment_reads_are_found():
    """The parser finds reads in settings and elsewhere (else the two tests below would pass vacuously)."""
    read = k8s.variables_read_by_the_code()
    assert {"DATABASE_URL", "SHUTDOWN_DRAIN_SECONDS", "OTEL_SERVICE_NAME", "PROMETHEUS_MULTIPROC_DIR"} <= set(read)
    assert any(where.startswith("config/settings.py") for where in read["DATABASE_URL"])


def test_a_read_with_a_computed_name_is_refused(tmp_path, monkeypatch):
    module = tmp_path / "computed.py"
    module.write_text(
        "import os\nfrom config.env import env_str\nA = env_str('A')\nB = os.environ.get(PREFIX + 'B')\n"
    )
    monkeypatch.setattr(k8s, "PROJECT_ROOT", tmp_path)
    reads, unknown = k8s.env_reads(module)
    assert [read.name for read in reads] == ["A"]
    assert unknown == ["computed.py:4"]


@pytest.mark.parametrize("workload", k8s.workloads(), ids=manifest_id)
def test_every_variable_the_code_reads_is_provided(workload):
    read = k8s.variables_read_by_the_code()
    for container in k8s.pod_template(workload)["spec"]["containers"]:
        missing = set(read) - provided_to(container) - set(NOT_SET_IN_KUBERNETES)
        assert not missing, {
            "add to k8s/configmap.yaml or secret.yaml (or to NOT_SET_IN_KUBERNETES, with the reason)": {
                name: read[name] for name in sorted(missing)
            }
        }


def test_every_variable_provided_is_read_by_the_code():
    read = set(k8s.variables_read_by_the_code())
    provided = set(k8s.config_data()) | set(k8s.secret_data())
    assert not provided - read, f"provided but read by nothing: {sorted(provided - read)}"
    for workload in k8s.workloads():
        for container in k8s.pod_template(workload)["spec"]["containers"]:
            extra = {v["name"] for v in container.get("env", [])} - read
            assert not extra, f"{manifest_id(workload)} sets variables nothing reads: {extra}"


def test_the_allowlist_names_only_variables_the_code_reads():
    stale = set(NOT_SET_IN_KUBERNETES) - set(k8s.variables_read_by_the_code())
    assert not stale, f"NOT_SET_IN_KUBERNETES lists variables nothing reads any more: {stale}"
    provided = set(k8s.config_data()) | set(k8s.secret_data())
    assert not set(NOT_SET_IN_KUBERNETES) & provided


def test_secrets_are_in_the_secret_and_nowhere_else():
    secret_like = re.compile(r"SECRET|PASSWORD|TOKEN|SIGNING_KEY|(DATABASE|REDIS|BROKER)_URL$")
    in_config = {name for name in k8s.config_data() if secret_like.search(name)}
    assert not in_config, f"secrets belong in secret.yaml: {in_config}"
    for workload in k8s.workloads():
        for container in k8s.pod_template(workload)["spec"]["containers"]:
            literal = {v["name"] for v in container.get("env", []) if secret_like.search(v["name"])}
            assert not literal, f"{manifest_id(workload)} sets secrets inline: {literal}"
    # The template holds placeholders an operator must replace, never real-looking values.
    for name in ("DJANGO_SECRET_KEY", "DATABASE_URL", "REDIS_URL"):
        assert "REPLACE_ME" in k8s.secret_data()[name]


def test_the_config_map_parses_as_the_settings_would():
    """Every value is a string (the API server would refuse others) of the type its setting expects."""
    data = k8s.config_data()
    assert all(isinstance(value, str) for value in data.values())
    source = (PROJECT_ROOT / "config" / "settings.py").read_text()
    for name, value in data.items():
        if re.search(rf'env_int\("{name}"', source):
            assert re.fullmatch(r"\d+", value), f"{name}={value!r} is not an integer"
        if re.search(rf'env_bool\("{name}"', source):
            assert value in {"true", "false"}, f"{name}={value!r} is not true or false"
    assert data["DJANGO_DEBUG"] == "false"


def test_the_worker_metrics_are_collected_across_the_pool():
    container = k8s.container(k8s.get("Deployment", "worker"))
    env = {v["name"]: v.get("value") for v in container.get("env", [])}
    directory = env["PROMETHEUS_MULTIPROC_DIR"]
    assert any(Path(directory).is_relative_to(m["mountPath"]) for m in container["volumeMounts"])


# --- filesystem and security ---------------------------------------------------------------------------------


def dockerfile_user() -> str:
    lines = (PROJECT_ROOT / "Dockerfile").read_text().splitlines()
    return [line.split()[1] for line in lines if line.startswith("USER ")][-1]


@pytest.mark.parametrize("workload", k8s.workloads(), ids=manifest_id)
def test_pods_run_unprivileged_on_a_read_only_root_filesystem(workload):
    spec = k8s.pod_template(workload)["spec"]
    uid, gid = dockerfile_user().split(":")
    security = spec["securityContext"]
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["runAsGroup"]) == (int(uid), int(gid))
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    for container in spec["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        # `command` would replace the image's entrypoint: tini must stay PID 1 to forward SIGTERM.
        assert "command" not in container
        script = k8s.container_script(container)
        if container["args"][:2] == ["sh", "-c"]:
            assert k8s.exec_line(container), "a script must `exec` its process, or SIGTERM stops at the shell"
        assert "manage.py" in script or "celery" in script
        resources = container["resources"]
        assert set(resources["requests"]) == {"cpu", "memory"}
        assert set(resources["limits"]) == {"cpu", "memory"}


@pytest.mark.parametrize("workload", k8s.workloads(), ids=manifest_id)
def test_every_path_the_process_writes_is_a_volume(workload):
    data = k8s.config_data()
    spec = k8s.pod_template(workload)["spec"]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    for container in spec["containers"]:
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
        assert "/tmp" in mounts
        # The data directory (beat's schedule, Django's scratch files) is writable in every pod.
        assert data["DJANGO_DATA_DIR"] in mounts
        if labels_of(workload)["app.kubernetes.io/component"] in {"web", "worker"}:
            # Exports: workers write them and web pods serve them, so both mount the same shared claim.
            media = mounts[data["DJANGO_MEDIA_ROOT"]]
            assert media["persistentVolumeClaim"]["claimName"] == "backend-media"
    claim = k8s.get("PersistentVolumeClaim", "backend-media")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_the_static_root_is_where_the_image_collected_the_static_files():
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    assert f"DJANGO_STATIC_ROOT={k8s.config_data()['DJANGO_STATIC_ROOT']}" in dockerfile


def test_web_pods_spread_over_nodes():
    for workload in web_workloads():
        spec = k8s.pod_template(workload)["spec"]
        terms = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        assert any(
            term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
            and k8s.selects(term["podAffinityTerm"]["labelSelector"], labels_of(workload))
            for term in terms
        )


# --- shutdown: the grace period covers the drain --------------------------------------------------------------


@pytest.mark.parametrize("workload", web_workloads(), ids=manifest_id)
def test_the_grace_period_covers_pre_stop_drain_and_graceful_shutdown(workload):
    data = k8s.config_data()
    spec = k8s.pod_template(workload)["spec"]
    container = k8s.container(workload)
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    argv = k8s.exec_line(container)
    # The server takes these from the ConfigMap unless its command overrides them.
    drain = float(k8s.option(argv, "--drain-seconds") or data["SHUTDOWN_DRAIN_SECONDS"])
    grace = float(k8s.option(argv, "--graceful-seconds") or data["SHUTDOWN_GRACE_SECONDS"])
    assert drain > 0, "without a drain phase the load balancer may still send requests to a stopping pod"
    # Kubernetes counts preStop inside the grace period, then SIGTERM starts drain + grace; SIGKILL comes at its
    # end. At least 5 s to spare for the process to exit after its last request.
    assert spec["terminationGracePeriodSeconds"] >= pre_stop + drain + grace + 5
    # The Istio sidecar keeps serving until the app's connections are gone, and at least through preStop + drain.
    proxy = yaml.safe_load(k8s.pod_template(workload)["metadata"]["annotations"]["proxy.istio.io/config"])
    assert proxy["holdApplicationUntilProxyStarts"] is True
    assert proxy["proxyMetadata"]["EXIT_ON_ZERO_ACTIVE_CONNECTIONS"] == "true"
    assert k8s.seconds(proxy["proxyMetadata"]["MINIMUM_DRAIN_DURATION"]) >= pre_stop + drain


def test_the_worker_s_grace_period_is_shorter_than_redelivery_takes():
    data = k8s.config_data()
    spec = k8s.pod_template(k8s.get("Deployment", "worker"))["spec"]
    # A task cut off at the end of the grace period is redelivered after the visibility timeout (acks late).
    assert spec["terminationGracePeriodSeconds"] < int(data["CELERY_VISIBILITY_TIMEOUT"])
    assert int(data["CELERY_TASK_SOFT_TIME_LIMIT"]) < int(data["CELERY_TASK_TIME_LIMIT"])
    assert int(data["CELERY_TASK_TIME_LIMIT"]) < int(data["CELERY_VISIBILITY_TIMEOUT"])
    assert int(data["JOB_LEASE_SECONDS"]) < int(data["CELERY_VISIBILITY_TIMEOUT"])


# --- ingress, hosts, network policy --------------------------------------------------------------------------


def test_ingress_hosts_are_served_by_the_app_with_tls():
    ingress = k8s.get("Ingress", "backend")
    data = k8s.config_data()
    allowed = data["DJANGO_ALLOWED_HOSTS"].split(",")
    trusted = data["DJANGO_CSRF_TRUSTED_ORIGINS"].split(",")
    hosts = [rule["host"] for rule in ingress["spec"]["rules"]]
    assert hosts
    assert sorted(h for tls in ingress["spec"]["tls"] for h in tls["hosts"]) == sorted(hosts)
    for host in hosts:
        assert host in allowed, f"{host} is routed to the app but not in DJANGO_ALLOWED_HOSTS"
        assert f"https://{host}" in trusted, f"the admin's forms on {host} need it in DJANGO_CSRF_TRUSTED_ORIGINS"
    annotations = ingress["metadata"]["annotations"]
    # The controller sends the Service's name as Host (so its sidecar applies the VirtualService): Django must
    # accept it.
    assert annotations["nginx.ingress.kubernetes.io/upstream-vhost"] == web_fqdn()
    assert web_fqdn() in allowed


def test_ingress_timeouts_and_body_limit_suit_the_app():
    annotations = k8s.get("Ingress", "backend")["metadata"]["annotations"]
    data = k8s.config_data()
    # An idle chat socket sees a heartbeat-driven frame far more often than nginx's read timeout.
    for key in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{key}"]) >= 10 * int(data["CHAT_HEARTBEAT_SECONDS"])
    size = annotations["nginx.ingress.kubernetes.io/proxy-body-size"]
    number, unit = re.fullmatch(r"(\d+)([kmg]?)", size.lower()).groups()
    limit = int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]
    # Larger than the app's own limit, so that oversized bodies get the contract's 413 from the app.
    assert limit > int(data["MAX_REQUEST_BODY_BYTES"])
    assert int(data["TRUSTED_PROXY_COUNT"]) == 1, "one proxy (the ingress controller) appends X-Forwarded-For"


def policy_ports(rule: dict) -> set[int]:
    return {port["port"] for port in rule.get("ports", [])}


def test_network_policies_let_only_the_ingress_controller_and_monitoring_in():
    policies = k8s.objects("NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and "ingress" not in p["spec"]]
    assert deny and deny[0]["spec"]["policyTypes"] == ["Ingress"], "no default deny of ingress"
    web_port = k8s.container_port(k8s.container(k8s.get("Deployment", "web")), "http")
    worker_port = int(k8s.config_data()["WORKER_METRICS_PORT"])
    sources_by_workload: dict[str, set[str]] = {}
    for policy in policies:
        for workload in k8s.objects("Deployment"):
            if not k8s.selects(policy["spec"]["podSelector"], labels_of(workload)):
                continue
            for rule in policy["spec"].get("ingress", []):
                for peer in rule["from"]:
                    namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                    sources_by_workload.setdefault(workload["metadata"]["name"], set()).add(namespace)
                    if namespace == "ingress-nginx":
                        assert policy_ports(rule) == {web_port}
                    else:
                        assert namespace == "monitoring"
                        assert {web_port, worker_port} <= policy_ports(rule)
    assert sources_by_workload == {
        "web": {"ingress-nginx", "monitoring"},
        "web-canary": {"ingress-nginx", "monitoring"},
        "worker": {"monitoring"},
    }


def test_metrics_are_not_routed_through_the_service():
    """Prometheus scrapes pods directly; through the Service (the mesh, the ingress) /metrics does not exist. (The
    app also refuses /metrics to anything with X-Forwarded-For: test_containers.py checks that.)"""
    routes = k8s.get("VirtualService", WEB_SERVICE)["spec"]["http"]
    assert routes[0]["match"] == [{"uri": {"prefix": "/metrics"}}]
    assert routes[0]["directResponse"]["status"] == 404


# --- Istio ---------------------------------------------------------------------------------------------------

ROUTE_KEYS = {"name", "match", "route", "directResponse", "timeout", "retries", "headers", "rewrite", "fault"}
MATCH_KEYS = {"uri", "method", "headers", "name"}
STRING_MATCH_KEYS = {"exact", "prefix", "regex"}
RETRY_ON = {
    "5xx",
    "gateway-error",
    "reset",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
}


def test_istio_objects_are_the_two_expected_on_the_v1_api():
    assert sorted(manifest_id(d) for d in ISTIO_OBJECTS) == [
        f"DestinationRule/{WEB_SERVICE}",
        f"VirtualService/{WEB_SERVICE}",
    ]
    for document in ISTIO_OBJECTS:
        assert document["apiVersion"] == "networking.istio.io/v1"
        assert set(document) == {"apiVersion", "kind", "metadata", "spec", "__file__"}


def string_match(match: dict) -> None:
    assert len(match) == 1 and set(match) <= STRING_MATCH_KEYS, match
    if "regex" in match:
        re.compile(match["regex"])


def test_the_virtual_service_routes_are_well_formed():
    service = k8s.get("VirtualService", WEB_SERVICE)
    spec = service["spec"]
    assert set(spec) == {"hosts", "http"}
    assert spec["hosts"] == [web_fqdn()]
    subsets = {s["name"] for s in k8s.get("DestinationRule", WEB_SERVICE)["spec"]["subsets"]}
    names = [route["name"] for route in spec["http"]]
    assert len(names) == len(set(names))
    for route in spec["http"]:
        assert set(route) <= ROUTE_KEYS, set(route) - ROUTE_KEYS
        assert ("route" in route) != ("directResponse" in route), route["name"]
        for match in route.get("match", []):
            assert set(match) <= MATCH_KEYS
            for key in ("uri", "method"):
                if key in match:
                    string_match(match[key])
            for header, value in match.get("headers", {}).items():
                assert header == header.lower()
                string_match(value)
        if "directResponse" in route:
            assert 200 <= route["directResponse"]["status"] <= 599
            continue
        destinations = route["route"]
        assert all(
            d["destination"]["host"] == web_fqdn() and d["destination"]["subset"] in subsets for d in destinations
        )
        if len(destinations) > 1:
            assert sum(d["weight"] for d in destinations) == 100
        timeout = k8s.seconds(route["timeout"])
        retries = route["retries"]  # explicit everywhere: Istio's default would retry twice
        assert isinstance(retries["attempts"], int) and retries["attempts"] >= 0
        if retries["attempts"]:
            assert set(retries["retryOn"].split(",")) <= RETRY_ON
            if timeout:
                assert k8s.seconds(retries["perTryTimeout"]) <= timeout
    # The catch-all is last: every route after a route without a match would be unreachable.
    assert all("match" in route for route in spec["http"][:-1])
    assert "match" not in spec["http"][-1]


def methods_matched(route: dict) -> set[str] | None:
    """The HTTP methods a route is limited to, or None when it takes any method."""
    methods = set()
    for match in route.get("match", [{}]):
        method = match.get("method")
        if method is None:
            return None
        if "exact" in method:
            methods.add(method["exact"])
        else:
            methods |= {
                m
                for m in ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")
                if re.fullmatch(method["regex"], m)
            }
    return methods


def test_only_idempotent_routes_retry_requests_the_app_may_have_seen():
    for route in k8s.get("VirtualService", WEB_SERVICE)["spec"]["http"]:
        retries = route.get("retries", {"attempts": 0})
        if not retries["attempts"]:
            continue
        conditions = set(retries["retryOn"].split(","))
        methods = methods_matched(route)
        if methods is None or not methods <= IDEMPOTENT_METHODS:
            assert conditions <= SAFE_FOR_ANY_METHOD, f"{route['name']} retries writes on {conditions}"
    reads = next(r for r in k8s.get("VirtualService", WEB_SERVICE)["spec"]["http"] if r["name"] == "reads")
    assert methods_matched(reads) == IDEMPOTENT_METHODS
    assert set(reads["retries"]["retryOn"].split(",")) > SAFE_FOR_ANY_METHOD


def test_websockets_have_no_route_timeout_and_the_canary_header_wins_over_weights():
    routes = k8s.get("VirtualService", WEB_SERVICE)["spec"]["http"]
    for route in routes:
        uris = [m.get("uri", {}) for m in route.get("match", [])]
        if any(uri.get("prefix") == "/ws/" for uri in uris):
            assert k8s.seconds(route["timeout"]) == 0
            assert route["retries"]["attempts"] == 0
    header_routes = [
        i
        for i, r in enumerate(routes)
        if any(m.get("headers", {}).get("x-canary") == {"exact": "always"} for m in r.get("match", []))
    ]
    assert header_routes
    for index in header_routes:
        assert [d["destination"]["subset"] for d in routes[index]["route"]] == ["canary"]
    # Every weighted route comes after a header route covering the same paths, so the header always wins.
    for later, route in enumerate(routes):
        if len(route.get("route", [])) < 2:
            continue
        uris = {str(m.get("uri")) for m in route.get("match", [])} or {"None"}
        assert any(
            index < later and {str(m.get("uri")) for m in routes[index]["match"]} & (uris | {"None"})
            for index in header_routes
        ), route["name"]


def test_the_websocket_prefix_is_where_the_app_serves_sockets():
    from chat.consumers import NoRouteConsumer
    from chat.routing import websocket_urlpatterns

    # Every route that serves sockets (the last one only closes those no route matches, wherever they are).
    served = [pattern for pattern in websocket_urlpatterns if pattern.callback.consumer_class is not NoRouteConsumer]
    patterns = [str(pattern.pattern) for pattern in served]
    assert patterns and all(re.match(r"\^?ws/", p) for p in patterns), patterns
    assert websocket_urlpatterns[-1].callback.consumer_class is NoRouteConsumer


def test_the_download_route_matches_the_app_s_download_endpoint():
    route = next(r for r in k8s.get("VirtualService", WEB_SERVICE)["spec"]["http"] if r["name"] == "downloads")
    regex = route["match"][0]["uri"]["regex"]
    path = "/api/v1/jobs/123/download"
    assert re.fullmatch(regex, path)
    match = resolve(path)
    assert match.url_name.endswith("download_job") or "download" in match.url_name, match
    assert not re.fullmatch(regex, "/api/v1/jobs/123")


def test_the_destination_rule_limits_connections_and_ejects_failing_pods():
    rule = k8s.get("DestinationRule", WEB_SERVICE)
    spec = rule["spec"]
    assert set(spec) == {"host", "trafficPolicy", "subsets"}
    assert spec["host"] == web_fqdn()
    policy = spec["trafficPolicy"]
    assert set(policy) == {"tls", "connectionPool", "outlierDetection"}
    assert policy["tls"]["mode"] in {"DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"}
    pool = policy["connectionPool"]
    assert set(pool) == {"tcp", "http"}
    assert set(pool["tcp"]) <= {"maxConnections", "connectTimeout", "tcpKeepalive", "maxConnectionDuration"}
    assert pool["tcp"]["maxConnections"] > 0
    k8s.seconds(pool["tcp"]["connectTimeout"])
    assert set(pool["http"]) <= {
        "http1MaxPendingRequests",
        "http2MaxRequests",
        "maxRequestsPerConnection",
        "maxRetries",
        "idleTimeout",
        "h2UpgradePolicy",
        "useClientProtocol",
        "maxConcurrentStreams",
    }
    assert all(isinstance(v, int) and v > 0 for k, v in pool["http"].items() if k != "idleTimeout")
    outlier = policy["outlierDetection"]
    assert set(outlier) <= {
        "consecutiveGatewayErrors",
        "consecutive5xxErrors",
        "interval",
        "baseEjectionTime",
        "maxEjectionPercent",
        "minHealthPercent",
        "splitExternalLocalOriginErrors",
        "consecutiveLocalOriginFailures",
    }
    k8s.seconds(outlier["interval"])
    k8s.seconds(outlier["baseEjectionTime"])
    # Never all pods: a shared cause (the database down) must not empty the pool.
    assert 0 < outlier["maxEjectionPercent"] < 100
    for subset in spec["subsets"]:
        assert set(subset) == {"name", "labels"}
        selected = [w for w in web_workloads() if k8s.selects(subset["labels"], labels_of(w))]
        assert len(selected) == 1, f"subset {subset['name']} should select one web track"
