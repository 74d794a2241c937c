"""deploy/: every overlay builds, every object validates against the Kubernetes
schemas (kubernetes-validate), and the policies hold: limits, non-root,
read-only root, no Secret access for workers, no committed password, RBAC that
covers exactly what the code sends."""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import psutil
import pytest
import redis
import yaml

from cortex_core.autoscale import max_useful_replicas
from cortex_core.backends.kubernetes import KubernetesBackend
from cortex_core.cluster.api import ClusterAPI
from cortex_core.cluster.tools import ClusterToolbox
from cortex_core.config import Settings
from cortex_core.embedded import find_redis_server, free_port
from cortex_core.keys import Keyspace
from cortex_core.models import PRIORITIES
from cortex_core.probe import metrics_text
from cortex_core.system import Services
from tests.fakes import kube_api as k
from tests.fakes.kube_api import FakeKubeAPI
from tests.helpers import make_worker, wait_for_sync
from tests.kustomize import KustomizeError, build, strategic_merge

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
OVERLAYS = ["overlays/plain", "overlays/keda"]
CRD_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor"}
READ_VERBS = {"get", "list", "watch"}
SECRET_NAME = re.compile(r"(PASSWORD|API_KEY|SECRET|AUTH|TOKEN)$")

Obj = dict[str, Any]


def by_kind(objects: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [
        o
        for o in objects
        if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def one(objects: list[Obj], kind: str, name: str) -> Obj:
    found = by_kind(objects, kind, name)
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def pod_specs(objects: list[Obj]) -> Iterator[tuple[str, Obj]]:
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet"):
            yield o["metadata"]["name"], o["spec"]["template"]["spec"]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> list[Obj]:
    return build(DEPLOY / request.param)


# The builder ------------------------------------------------------------------


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_builder_namespaces_patches_and_generators(tmp_path: Path) -> None:
    write(
        tmp_path / "base/kustomization.yaml",
        "namespace: ns\nresources: [all.yaml]\n",
    )
    write(
        tmp_path / "base/all.yaml",
        "kind: Deployment\nmetadata: {name: d}\nspec:\n  replicas: 2\n"
        "  template: {spec: {containers: [{name: a, image: x}, {name: b}]}}\n"
        "---\nkind: ClusterRole\nmetadata: {name: r}\n",
    )
    write(tmp_path / "over/data.txt", "hello")
    write(
        tmp_path / "over/kustomization.yaml",
        "resources: [../base]\n"
        "patches:\n"
        "  - target: {kind: Deployment, name: d}\n"
        "    patch: '[{op: remove, path: /spec/replicas}]'\n"
        "  - patch: |\n"
        "      kind: Deployment\n"
        "      metadata: {name: d}\n"
        "      spec: {template: {spec: {containers: [{name: b, image: y}]}}}\n"
        "configMapGenerator:\n"
        "  - name: cm\n"
        "    files: [k=data.txt]\n"
        "    literals: [x=1]\n"
        "    options: {disableNameSuffixHash: true, labels: {l: v}}\n",
    )
    objs = build(tmp_path / "over")
    d = one(objs, "Deployment", "d")
    assert d["metadata"]["namespace"] == "ns"
    assert "replicas" not in d["spec"]
    assert d["spec"]["template"]["spec"]["containers"] == [
        {"name": "a", "image": "x"},
        {"name": "b", "image": "y"},
    ]
    assert "namespace" not in one(objs, "ClusterRole", "r")["metadata"]
    cm = one(objs, "ConfigMap", "cm")
    assert cm["data"] == {"k": "hello", "x": "1"}
    assert cm["metadata"]["labels"] == {"l": "v"}


@pytest.mark.parametrize(
    ("kustomization", "message"),
    [
        ("resources: [all.yaml]\ncommonLabels: {a: b}\n", "unsupported field"),
        ("resources: [missing.yaml]\n", "does not exist"),
        ("resources: [all.yaml, all.yaml]\n", "defined twice"),
        (
            "resources: [all.yaml]\npatches:\n  - target: {kind: Service}\n"
            "    patch: '[{op: remove, path: /spec}]'\n",
            "matches no object",
        ),
        (
            "configMapGenerator:\n  - name: c\n    literals: [a=b]\n",
            "disableNameSuffixHash",
        ),
    ],
)
def test_builder_refuses_what_it_does_not_implement(
    tmp_path: Path, kustomization: str, message: str
) -> None:
    write(tmp_path / "kustomization.yaml", kustomization)
    write(tmp_path / "all.yaml", "kind: ConfigMap\nmetadata: {name: c}\n")
    with pytest.raises(KustomizeError, match=message):
        build(tmp_path)


def test_strategic_merge_deletes_with_null() -> None:
    assert strategic_merge({"a": 1, "b": {"c": 2}}, {"b": {"c": None}}) == {
        "a": 1,
        "b": {},
    }


# Building and schemas -----------------------------------------------------------


def test_every_overlay_builds_with_what_it_promises() -> None:
    plain = build(DEPLOY / "overlays/plain")
    keda = build(DEPLOY / "overlays/keda")
    monitoring = build(DEPLOY / "monitoring")
    for objs in (plain, keda):
        for kind, name in [
            ("Namespace", "cortex"),
            ("ConfigMap", "cortex-config"),
            ("StatefulSet", "cortex-redis"),
            ("Service", "cortex-redis"),
            ("NetworkPolicy", "cortex-redis"),
            ("Deployment", "cortex-worker"),
            ("PodDisruptionBudget", "cortex-worker"),
            ("Service", "cortex-worker-metrics"),
            ("ServiceAccount", "cortex-worker"),
            ("ServiceAccount", "cortex-operator"),
            ("ClusterRole", "cortex-worker"),
            ("Role", "cortex-operator"),
        ]:
            one(objs, kind, name)
    assert not by_kind(plain, "ScaledObject")
    one(keda, "ScaledObject", "cortex-worker")
    one(keda, "TriggerAuthentication", "cortex-redis")
    one(monitoring, "ServiceMonitor", "cortex-worker")
    cm = one(monitoring, "ConfigMap", "cortex-grafana-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    for obj in plain + keda + monitoring:
        if obj["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == "cortex", obj["metadata"]


@pytest.mark.parametrize("where", [*OVERLAYS, "monitoring"])
def test_every_object_validates_against_the_kubernetes_schemas(where: str) -> None:
    version = kubernetes_validate.latest_version()
    checked = 0
    for obj in build(DEPLOY / where):
        if obj["kind"] in CRD_KINDS:
            # kubernetes-validate ships no CRD schemas; see test_crd_objects.
            continue
        kubernetes_validate.validate(obj, version, strict=True)
        checked += 1
    assert checked > 0


def test_schema_validation_catches_a_mistake() -> None:
    """The validator is not a no-op: a misspelt field fails it."""
    worker = one(build(DEPLOY / "overlays/plain"), "Deployment", "cortex-worker")
    worker["spec"]["template"]["spec"]["containers"][0]["resourses"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(
            worker, kubernetes_validate.latest_version(), strict=True
        )


def test_crd_objects() -> None:
    keda = build(DEPLOY / "overlays/keda")
    so = one(keda, "ScaledObject", "cortex-worker")
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    assert so["spec"]["scaleTargetRef"] == {"name": "cortex-worker"}
    auth = one(keda, "TriggerAuthentication", "cortex-redis")
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": "cortex-redis", "key": "password"}
    ]
    for trigger in so["spec"]["triggers"]:
        if trigger["type"] == "redis":
            assert trigger["authenticationRef"] == {"name": "cortex-redis"}
    sm = one(build(DEPLOY / "monitoring"), "ServiceMonitor", "cortex-worker")
    service = one(keda, "Service", "cortex-worker-metrics")
    labels = service["metadata"]["labels"]
    assert all(
        labels.get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items()
    )
    ports = [p["name"] for p in service["spec"]["ports"]]
    assert [e["port"] for e in sm["spec"]["endpoints"]] == ["metrics"]
    assert "metrics" in ports


# Policies -----------------------------------------------------------------------


def test_every_container_is_limited_non_root_and_read_only(overlay: list[Obj]) -> None:
    specs = list(pod_specs(overlay))
    assert {name for name, _ in specs} == {"cortex-worker", "cortex-redis"}
    for name, spec in specs:
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        for c in spec["containers"]:
            where = f"{name}/{c['name']}"
            res = c["resources"]
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res[part]), (where, part)
            sc = c["securityContext"]
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
            assert (sc.get("runAsUser") or pod_sc.get("runAsUser") or 0) > 0, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "livenessProbe" in c and "readinessProbe" in c, where


def test_no_secret_or_password_is_committed() -> None:
    """No Secret objects; every password-like variable comes from a Secret."""
    texts = [p.read_text() for p in DEPLOY.rglob("*.yaml")]
    assert texts
    for where in [*OVERLAYS, "monitoring"]:
        objs = build(DEPLOY / where)
        assert not by_kind(objs, "Secret")
        for _, spec in pod_specs(objs):
            for c in spec["containers"]:
                for env in c.get("env", []):
                    if SECRET_NAME.search(env["name"]):
                        assert "secretKeyRef" in env["valueFrom"], env
                    value = env.get("value", "")
                    # A URL's password is a reference to a Secret-fed variable.
                    for password in re.findall(r"://[^:/@]*:([^@]+)@", value):
                        assert re.fullmatch(r"\$\([A-Z_]+\)", password), env
        for cm in by_kind(objs, "ConfigMap"):
            for key in cm["data"]:
                assert not SECRET_NAME.search(key), key
    for text in texts:
        assert not re.search(r"requirepass\s+[^\s%$]", text)
        assert "sk-ant-" not in text


def rules_of(objs: list[Obj], kind: str, name: str) -> list[Obj]:
    rules: list[Obj] = one(objs, kind, name)["rules"]
    return rules


def allows(rules: list[Obj], verb: str, group: str, resource: str, name: str) -> bool:
    return any(
        verb in r["verbs"]
        and group in r["apiGroups"]
        and resource in r["resources"]
        and (not r.get("resourceNames") or name in r["resourceNames"])
        for r in rules
    )


def test_worker_role_is_read_only_and_never_reaches_secrets(
    overlay: list[Obj],
) -> None:
    rules = rules_of(overlay, "ClusterRole", "cortex-worker")
    for r in rules:
        assert set(r["verbs"]) <= READ_VERBS, r
        assert "*" not in r["resources"] + r["apiGroups"] + r["verbs"], r
        assert "secrets" not in r["resources"], r
    binding = one(overlay, "ClusterRoleBinding", "cortex-worker")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "cortex-worker", "namespace": "cortex"}
    ]
    worker = one(overlay, "Deployment", "cortex-worker")
    assert worker["spec"]["template"]["spec"]["serviceAccountName"] == "cortex-worker"


def test_operator_role_writes_only_scale_and_autoscalers(overlay: list[Obj]) -> None:
    rules = rules_of(overlay, "Role", "cortex-operator")
    for r in rules:
        assert "secrets" not in r["resources"], r
        assert "*" not in r["resources"] + r["apiGroups"] + r["verbs"], r
        writes = set(r["verbs"]) - READ_VERBS
        if writes:
            assert writes == {"patch"}, r
            assert set(r["resources"]) <= {
                "deployments/scale",
                "horizontalpodautoscalers",
                "scaledobjects",
            }, r
            assert r["resourceNames"] == ["cortex-worker"], r


_PATH_RE = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)(?:/namespaces/[^/]+)?"
    r"/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$"
)


def rbac_of(method: str, path: str) -> tuple[str, str, str, str]:
    m = _PATH_RE.match(path)
    assert m is not None, path
    resource = m["plural"] + (f"/{m['sub']}" if m["sub"] else "")
    verb = {"PATCH": "patch"}.get(method, "get" if m["name"] else "list")
    return verb, m["group"] or "", resource, m["name"] or ""


async def test_roles_cover_every_request_the_code_sends(
    kube_api: FakeKubeAPI, kubeconfig: Path, settings: Settings
) -> None:
    """The tools' and the backend's recorded requests are exactly what the
    worker and operator roles allow."""
    objs = build(DEPLOY / "overlays/keda")
    worker_rules = rules_of(objs, "ClusterRole", "cortex-worker")
    operator_rules = rules_of(objs, "Role", "cortex-operator")
    kube_api.add("apps/v1", "deployments", k.deployment())
    kube_api.add("v1", "pods", k.pod("cortex-worker-a"))
    kube_api.add("v1", "nodes", k.node("node-a"))
    api = ClusterAPI.connect(kubeconfig=kubeconfig, timeout=2.0)
    try:
        box = ClusterToolbox(api, namespaces=["cortex"])
        for spec in box.specs():
            props = spec.input_schema.get("properties", {})
            await box.call(
                spec.name, {"namespace": "cortex"} if "namespace" in props else {}
            )
        tool_requests = list(kube_api.requests)
        assert tool_requests
        for r in tool_requests:
            verb, group, resource, name = rbac_of(r.method, r.path)
            assert allows(worker_rules, verb, group, resource, name), r.path
        kube_api.requests.clear()
        backend = KubernetesBackend(settings, api)
        await backend.set_desired(3)
        kube_api.add("keda.sh/v1alpha1", "scaledobjects", k.scaled_object())
        await backend.set_desired(4)
        await backend.release_pin()
        kube_api.objects[("keda.sh/v1alpha1", "scaledobjects")].clear()
        kube_api.add("autoscaling/v2", "horizontalpodautoscalers", k.hpa())
        await backend.set_desired(4)
        await backend.release_pin()
    finally:
        api.close()
    assert {r.method for r in kube_api.requests} == {"GET", "PATCH"}
    for r in kube_api.requests:
        verb, group, resource, name = rbac_of(r.method, r.path)
        assert allows(operator_rules, verb, group, resource, name), (r.method, r.path)


def config_of(objs: list[Obj]) -> dict[str, str]:
    data: dict[str, str] = one(objs, "ConfigMap", "cortex-config")["data"]
    return data


def test_worker_settings_load_and_grace_outlasts_the_hand_back(
    overlay: list[Obj], tmp_path: Path
) -> None:
    deploy = one(overlay, "Deployment", "cortex-worker")
    spec = deploy["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = dict(config_of(overlay))
    for e in container["env"]:
        if "value" in e:
            env[e["name"]] = e["value"].replace("$(REDIS_PASSWORD)", "pw")
    env["CORTEX_DATA_DIR"] = str(tmp_path)
    # Every CORTEX_* variable the manifests set is a setting cortex accepts.
    settings = Settings.load(environ=env)
    assert settings.redis_url == "redis://:pw@cortex-redis:6379/0"
    assert settings.metrics_port == 9090 and settings.metrics_host == "0.0.0.0"
    assert spec["terminationGracePeriodSeconds"] >= settings.shutdown_grace_seconds + 30
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == settings.metrics_port
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["command"][:2] == ["cortex", "worker"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(env["CORTEX_DATA_DIR"]) != "/data"  # replaced above for the load
    assert config_of(overlay)["CORTEX_DATA_DIR"] in mounts


def test_redis_only_for_cortex_pods_and_budgeted(overlay: list[Obj]) -> None:
    policy = one(overlay, "NetworkPolicy", "cortex-redis")
    redis_set = one(overlay, "StatefulSet", "cortex-redis")
    redis_labels = redis_set["spec"]["template"]["metadata"]["labels"]
    assert all(
        redis_labels[k] == v
        for k, v in policy["spec"]["podSelector"]["matchLabels"].items()
    )
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "cortex"}}}
    ]
    worker = one(overlay, "Deployment", "cortex-worker")
    assert (
        worker["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"]
        == "cortex"
    )
    assert redis_set["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]
    pdb = one(overlay, "PodDisruptionBudget", "cortex-worker")
    assert pdb["spec"]["selector"] == worker["spec"]["selector"]


@pytest.fixture
def redis_from_manifest(tmp_path: Path) -> Iterator[tuple[int, str, int]]:
    """The Redis container's own command, run here on a free loopback port
    with its volumes as temporary directories."""
    objs = build(DEPLOY / "overlays/plain")
    (c,) = one(objs, "StatefulSet", "cortex-redis")["spec"]["template"]["spec"][
        "containers"
    ]
    assert c["command"] == ["sh", "-c"]
    script = c["args"][0]
    (tmp_path / "conf").mkdir()
    (tmp_path / "data").mkdir()
    script = (
        script.replace("/conf/", f"{tmp_path}/conf/")
        .replace("--dir /data", f"--dir {tmp_path}/data")
        .replace("exec redis-server", f"exec {shlex.quote(find_redis_server())}")
    )
    port = free_port()
    password = "f" * 64
    proc = subprocess.Popen(
        ["sh", "-c", f"{script} --port {port} --bind 127.0.0.1"],
        env={"REDIS_PASSWORD": password, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield port, password, proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


def test_redis_command_from_the_manifest(
    redis_from_manifest: tuple[int, str, int],
) -> None:
    port, password, pid = redis_from_manifest
    client = redis.Redis(host="127.0.0.1", port=port, password=password)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            psutil.Process(pid)  # still running
            return False

    wait_for_sync(up, "the manifest's redis-server to answer")
    settings = {
        key: client.config_get(key)[key]
        for key in ("appendonly", "appendfsync", "maxmemory-policy")
    }
    client.close()
    assert settings == {
        "appendonly": "yes",
        "appendfsync": "everysec",
        "maxmemory-policy": "noeviction",
    }
    # Without the password Redis answers nothing but NOAUTH.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(b"PING\r\n")
        assert raw.recv(100).startswith(b"-NOAUTH")
    # The password is in no process's arguments.
    assert password not in " ".join(psutil.Process(pid).cmdline())


# Autoscaling ----------------------------------------------------------------------


def test_keda_scales_on_the_whole_backlog_up_to_what_the_budget_feeds() -> None:
    objs = build(DEPLOY / "overlays/keda")
    deploy = one(objs, "Deployment", "cortex-worker")
    assert "replicas" not in deploy["spec"], "KEDA owns the replica count"
    so = one(objs, "ScaledObject", "cortex-worker")
    config = config_of(objs)
    notes = so["metadata"]["annotations"]
    assert notes["cortex.dev/tokens-per-minute"] == config["CORTEX_TOKENS_PER_MINUTE"]
    assert notes["cortex.dev/concurrency"] == config["CORTEX_CONCURRENCY"]
    expected = max_useful_replicas(
        tokens_per_minute=int(notes["cortex.dev/tokens-per-minute"]),
        concurrency=int(notes["cortex.dev/concurrency"]),
        tokens_per_task=int(notes["cortex.dev/tokens-per-task"]),
        seconds_per_task=float(notes["cortex.dev/seconds-per-task"]),
    )
    assert so["spec"]["maxReplicaCount"] == expected
    assert 0 <= so["spec"]["minReplicaCount"] <= expected
    triggers = so["spec"]["triggers"]
    (backlog,) = [t for t in triggers if t["type"] == "metrics-api"]
    assert backlog["metadata"]["valueLocation"] == "backlog"
    assert backlog["metadata"]["targetValue"] == config["CORTEX_CONCURRENCY"]
    service = one(objs, "Service", "cortex-worker-metrics")
    port = service["spec"]["ports"][0]["port"]
    assert backlog["metadata"]["url"] == (
        f"http://cortex-worker-metrics.cortex.svc.cluster.local:{port}/backlog"
    )
    keys = Keyspace(config["CORTEX_NAMESPACE"])
    lists = {t["metadata"]["listName"] for t in triggers if t["type"] == "redis"}
    assert lists == {keys.pending(p) for p in PRIORITIES}
    down = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert down["scaleDown"]["stabilizationWindowSeconds"] >= 60
    keda_policy = one(objs, "NetworkPolicy", "cortex-redis-keda")
    assert keda_policy["spec"]["ingress"][0]["ports"] == [
        {"protocol": "TCP", "port": 6379}
    ]


def test_replica_formula() -> None:
    assert (
        max_useful_replicas(
            tokens_per_minute=400_000,
            concurrency=8,
            tokens_per_task=4000,
            seconds_per_task=20,
        )
        == 5
    )
    # A budget below one busy worker still keeps one.
    assert (
        max_useful_replicas(
            tokens_per_minute=1000,
            concurrency=8,
            tokens_per_task=4000,
            seconds_per_task=1,
        )
        == 1
    )
    with pytest.raises(Exception, match="concurrency: must be above 0"):
        max_useful_replicas(
            tokens_per_minute=1, concurrency=0, tokens_per_task=1, seconds_per_task=1
        )


# Observability ----------------------------------------------------------------------


async def test_dashboard_queries_only_metrics_the_workers_export(
    services: Services,
) -> None:
    dashboard = json.loads((DEPLOY / "monitoring/dashboard.json").read_text())
    exported = set(
        re.findall(
            r"^(cortex_\w+)",
            await metrics_text(make_worker(services), services.queue),
            re.M,
        )
    )
    titles = [p["title"] for p in dashboard["panels"]]
    for wanted in ("Queue depth", "Workers", "Tokens per minute", "Completions", "429"):
        assert any(wanted in t for t in titles), wanted
    used: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"\b(cortex_\w+)", target["expr"]))
    assert used and used <= exported, used - exported
    generated = one(
        build(DEPLOY / "monitoring"), "ConfigMap", "cortex-grafana-dashboard"
    )
    assert json.loads(generated["data"]["cortex.json"]) == dashboard


def test_dockerfile_runs_as_non_root() -> None:
    text = (DEPLOY.parent / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert re.search(r"^FROM\s+python:3\.\d+-slim", text, re.M)
    deploy = one(build(DEPLOY / "overlays/plain"), "Deployment", "cortex-worker")
    run_as = deploy["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert users[-1].split(":")[0] == str(run_as)
    # Everything the image copies is in the build context (.dockerignore).
    ignored = {
        line.strip()
        for line in (DEPLOY.parent / ".dockerignore").read_text().splitlines()
    }
    for line in re.findall(r"^COPY\s+(.+)$", text, re.M):
        for source in line.split()[:-1]:
            assert (DEPLOY.parent / source).exists(), source
            assert source.rstrip("/") not in ignored, source
    # The yaml loader round-trips what the builder reads.
    assert yaml.safe_load(yaml.safe_dump(deploy)) == deploy
