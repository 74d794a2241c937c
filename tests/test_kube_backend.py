"""The Kubernetes backend against the fake Kubernetes API, through the real
``kubernetes`` client and a kubeconfig file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cortex_core.backends.kubernetes import (
    HPA_MAX_KEPT,
    HPA_MIN_KEPT,
    KEDA_PAUSED,
    KubernetesBackend,
)
from cortex_core.cluster.api import ClusterAPI
from cortex_core.cluster.tools import ClusterToolbox
from cortex_core.config import Settings
from cortex_core.errors import BackendError, ClusterError
from tests.fakes import kube_api as k
from tests.fakes.kube_api import FakeKubeAPI

APPS = "apps/v1"
HPA = "autoscaling/v2"
KEDA = "keda.sh/v1alpha1"
METRICS = "metrics.k8s.io/v1beta1"


@pytest.fixture
def cluster(kube_api: FakeKubeAPI) -> FakeKubeAPI:
    kube_api.add(APPS, "deployments", k.deployment(replicas=3, ready=2))
    kube_api.add("v1", "pods", k.pod("cortex-worker-a", restarts=2, node="node-a"))
    kube_api.add(
        "v1", "pods", k.pod("cortex-worker-b", ready=False, node="node-b", age=30)
    )
    # A completed and a failed pod that still carry the worker label.
    kube_api.add("v1", "pods", k.pod("cortex-worker-old", phase="Succeeded"))
    kube_api.add("v1", "pods", k.pod("cortex-worker-bad", phase="Failed"))
    kube_api.add("v1", "pods", k.pod("redis-0", labels={"app": "redis"}))
    kube_api.add(
        METRICS, "pods", k.pod_metrics("cortex-worker-a", cpu="250m", memory="64Mi")
    )
    return kube_api


@pytest.fixture
def backend(kubeconfig: Path, settings: Settings) -> Iterator[KubernetesBackend]:
    api = ClusterAPI.connect(kubeconfig=kubeconfig, timeout=2.0)
    yield KubernetesBackend(settings.replace(backend="kubernetes"), api)
    api.close()


def writes(fake: FakeKubeAPI) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in fake.requests if r.method != "GET"]


async def test_pods_by_selector_without_completed_ones(
    cluster: FakeKubeAPI, backend: KubernetesBackend
) -> None:
    view = await backend.refresh()
    assert view.error is None
    assert view.desired == 3
    assert [p.name for p in view.pods] == ["cortex-worker-a", "cortex-worker-b"]
    a, b = view.pods
    assert (a.state, a.restarts, a.node) == ("running", 2, "node-a")
    assert a.cpu_percent == pytest.approx(25.0)
    assert a.memory_bytes == 64 * 1024 * 1024
    assert (b.state, b.node) == ("not ready", "node-b")
    assert b.cpu_percent is None and b.memory_bytes is None
    assert a.started_at is not None and b.started_at is not None
    assert a.started_at < b.started_at
    assert view.metrics is True
    # The pods were listed by the Deployment's own selector.
    pod_lists = [r for r in cluster.requests if r.path.endswith("/pods")]
    assert all("labelSelector=app.kubernetes.io" in r.query for r in pod_lists)


@pytest.mark.parametrize("status", [503, 404])
async def test_metrics_api_missing_leaves_the_rest_live(
    cluster: FakeKubeAPI, backend: KubernetesBackend, status: int
) -> None:
    cluster.refuse("metrics.k8s.io/v1beta1", status)
    view = await backend.refresh()
    assert view.error is None
    assert view.metrics is False
    assert [p.name for p in view.pods] == ["cortex-worker-a", "cortex-worker-b"]
    assert all(p.cpu_percent is None and p.memory_bytes is None for p in view.pods)
    assert view.pods[0].restarts == 2


async def test_scale_without_autoscaler_patches_the_scale_subresource(
    cluster: FakeKubeAPI, backend: KubernetesBackend
) -> None:
    assert await backend.scale(+2) == 5
    assert (
        cluster.get(APPS, "deployments", "cortex", "cortex-worker")["spec"]["replicas"]
        == 5
    )
    assert writes(cluster) == [
        ("PATCH", "/apis/apps/v1/namespaces/cortex/deployments/cortex-worker/scale")
    ]
    view = await backend.refresh()
    assert view.autoscaler is None and view.desired == 5


async def test_keda_pin_and_release_through_paused_replicas(
    cluster: FakeKubeAPI, backend: KubernetesBackend
) -> None:
    cluster.add(KEDA, "scaledobjects", k.scaled_object(min_replicas=0))
    view = await backend.refresh()
    assert view.autoscaler is not None
    assert view.autoscaler.describe() == "keda cortex-worker 0-8"
    assert await backend.set_desired(6) == 6
    so = cluster.get(KEDA, "scaledobjects", "cortex", "cortex-worker")
    assert so["metadata"]["annotations"][KEDA_PAUSED] == "6"
    # The Deployment's count is KEDA's to write: cortex did not touch it.
    deploy = cluster.get(APPS, "deployments", "cortex", "cortex-worker")
    assert deploy["spec"]["replicas"] == 3
    assert backend.last.autoscaler is not None
    assert backend.last.autoscaler.describe() == "keda cortex-worker pinned at 6"
    assert backend.desired == 6
    # Relative scaling starts from the pin, not from the Deployment.
    assert await backend.scale(-1) == 5
    assert so["metadata"]["annotations"][KEDA_PAUSED] == "5"
    released = await backend.release_pin()
    assert released == "keda cortex-worker 0-8"
    assert KEDA_PAUSED not in so["metadata"].get("annotations", {})
    patch_paths = {p for m, p in writes(cluster)}
    assert patch_paths == {
        "/apis/keda.sh/v1alpha1/namespaces/cortex/scaledobjects/cortex-worker"
    }
    merge = [r for r in cluster.requests if r.method == "PATCH"]
    assert all(r.content_type == "application/merge-patch+json" for r in merge)
    with pytest.raises(BackendError, match="nothing to release"):
        await backend.release_pin()


async def test_keda_pin_at_zero(
    cluster: FakeKubeAPI, backend: KubernetesBackend
) -> None:
    cluster.add(KEDA, "scaledobjects", k.scaled_object())
    assert await backend.set_desired(0) == 0
    so = cluster.get(KEDA, "scaledobjects", "cortex", "cortex-worker")
    assert so["metadata"]["annotations"][KEDA_PAUSED] == "0"


async def test_hpa_pin_keeps_the_range_and_release_restores_it(
    cluster: FakeKubeAPI, backend: KubernetesBackend
) -> None:
    cluster.add(HPA, "horizontalpodautoscalers", k.hpa(min_replicas=2, max_replicas=9))
    assert await backend.set_desired(4) == 4
    h = cluster.get(HPA, "horizontalpodautoscalers", "cortex", "cortex-worker")
    assert (h["spec"]["minReplicas"], h["spec"]["maxReplicas"]) == (4, 4)
    assert h["metadata"]["annotations"][HPA_MIN_KEPT] == "2"
    assert h["metadata"]["annotations"][HPA_MAX_KEPT] == "9"
    assert backend.last.autoscaler is not None
    assert backend.last.autoscaler.pinned == 4
    # A second pin keeps the original range, not the pinned one.
    assert await backend.set_desired(5) == 5
    assert h["metadata"]["annotations"][HPA_MIN_KEPT] == "2"
    assert h["metadata"]["annotations"][HPA_MAX_KEPT] == "9"
    # An HPA cannot hold 0: refused, nothing written.
    before = len(writes(cluster))
    with pytest.raises(BackendError, match="cannot hold 0"):
        await backend.set_desired(0)
    assert len(writes(cluster)) == before
    assert await backend.release_pin() == "hpa cortex-worker 2-9"
    assert (h["spec"]["minReplicas"], h["spec"]["maxReplicas"]) == (2, 9)
    assert HPA_MIN_KEPT not in h["metadata"].get("annotations", {})
    deploy = cluster.get(APPS, "deployments", "cortex", "cortex-worker")
    assert deploy["spec"]["replicas"] == 3
    assert all("horizontalpodautoscalers" in p for _, p in writes(cluster))


async def test_hpa_for_another_deployment_is_not_an_owner(
    cluster: FakeKubeAPI, backend: KubernetesBackend
) -> None:
    cluster.add(HPA, "horizontalpodautoscalers", k.hpa("web", target="web"))
    cluster.add(KEDA, "scaledobjects", k.scaled_object("web", target="web"))
    view = await backend.refresh()
    assert view.autoscaler is None
    assert await backend.set_desired(1) == 1
    assert writes(cluster)[-1][1].endswith("/deployments/cortex-worker/scale")


async def test_keda_not_installed_falls_back_to_hpa(
    cluster: FakeKubeAPI, backend: KubernetesBackend
) -> None:
    cluster.refuse("keda.sh/v1alpha1", 404)
    cluster.add(HPA, "horizontalpodautoscalers", k.hpa())
    view = await backend.refresh()
    assert view.error is None
    assert view.autoscaler is not None and view.autoscaler.kind == "hpa"


async def test_scale_refused_by_rbac_names_verb_resource_and_rbac(
    cluster: FakeKubeAPI, backend: KubernetesBackend
) -> None:
    cluster.refuse("deployments/scale", 403, "PATCH")
    with pytest.raises(BackendError) as info:
        await backend.set_desired(4)
    line = str(info.value)
    assert "\n" not in line
    assert "patch deployments/scale cortex-worker in namespace cortex" in line
    assert "403 Forbidden" in line
    assert 'verb "patch" on "deployments/scale" (apiGroup apps)' in line


async def test_keda_patch_refused_names_the_scaledobject(
    cluster: FakeKubeAPI, backend: KubernetesBackend
) -> None:
    cluster.add(KEDA, "scaledobjects", k.scaled_object())
    cluster.refuse("scaledobjects", 403, "PATCH")
    with pytest.raises(BackendError, match=r'verb "patch" on "scaledobjects"'):
        await backend.set_desired(2)


@pytest.mark.parametrize(
    ("status", "expect"),
    [
        (401, "401 Unauthorized"),
        (403, 'RBAC needed: verb "get" on "deployments/scale"'),
        (404, "404 Not Found"),
    ],
)
async def test_read_errors_become_one_line(
    cluster: FakeKubeAPI, backend: KubernetesBackend, status: int, expect: str
) -> None:
    cluster.refuse("deployments/scale", status)
    view = await backend.refresh()
    assert view.error is not None
    assert "get deployments/scale cortex-worker in namespace cortex" in view.error
    assert expect in view.error
    assert "\n" not in view.error
    assert cluster.token not in view.error
    with pytest.raises(BackendError, match=expect.split(":")[0]):
        await backend.scale(1)


async def test_pod_list_refused_keeps_the_count_and_says_why(
    cluster: FakeKubeAPI, backend: KubernetesBackend
) -> None:
    cluster.refuse("pods", 403)
    view = await backend.refresh()
    assert view.desired == 3
    assert view.error is not None
    assert 'verb "list" on "pods" (apiGroup "")' in view.error


async def test_missing_deployment(
    kube_api: FakeKubeAPI, backend: KubernetesBackend
) -> None:
    view = await backend.refresh()
    assert view.error is not None
    assert "404 Not Found" in view.error
    assert "deployments/scale cortex-worker" in view.error


async def test_timeout_is_one_line(
    cluster: FakeKubeAPI, kubeconfig: Path, settings: Settings
) -> None:
    cluster.hang("deployments", seconds=5)
    api = ClusterAPI.connect(kubeconfig=kubeconfig, timeout=0.3)
    try:
        view = await KubernetesBackend(settings, api).refresh()
    finally:
        api.close()
        cluster.clear_rules()
    assert view.error is not None
    assert "no answer within 0.3s (timed out)" in view.error


def test_context_and_namespace_from_flags_or_kubeconfig(
    kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    path = kube_api.write_kubeconfig(tmp_path / "kc", context="prod", namespace="ops")
    data = json.loads(path.read_text())
    data["contexts"].append(
        {"name": "dev", "context": {"cluster": "fake-cluster", "user": "fake-user"}}
    )
    path.write_text(json.dumps(data))
    api = ClusterAPI.connect(kubeconfig=path)
    assert (api.target.context, api.target.namespace) == ("prod", "ops")
    api.close()
    api = ClusterAPI.connect(kubeconfig=path, context="dev")
    assert (api.target.context, api.target.namespace) == ("dev", "default")
    api.close()
    api = ClusterAPI.connect(kubeconfig=path, context="dev", namespace="cortex")
    assert api.target.namespace == "cortex"
    api.close()
    with pytest.raises(ClusterError, match="no context named 'nope'"):
        ClusterAPI.connect(kubeconfig=path, context="nope")


async def test_workers_code_sends_no_write_verb(
    cluster: FakeKubeAPI, kubeconfig: Path, backend: KubernetesBackend
) -> None:
    """Every tool a worker's model can call, and every read of the backend,
    sends GETs only; the operator's scale and pin patches are the only writes,
    and they go to the scale subresource and the autoscaler objects."""
    cluster.add("v1", "nodes", k.node("node-a"))
    cluster.add("v1", "events", k.event("e1"))
    cluster.add("v1", "services", k.service("cortex-redis"))
    cluster.add("v1", "endpoints", k.endpoints("cortex-redis"))
    cluster.add(METRICS, "nodes", k.node_metrics("node-a"))
    api = ClusterAPI.connect(kubeconfig=kubeconfig, timeout=2.0)
    box = ClusterToolbox(api, namespaces=["cortex"])
    try:
        for spec in box.specs():
            props = spec.input_schema.get("properties", {})
            args = {"namespace": "cortex"} if "namespace" in props else {}
            outcome = await box.call(spec.name, args)
            assert not outcome.is_error, (spec.name, outcome.content)
    finally:
        api.close()
    await backend.refresh()
    assert cluster.requests
    assert cluster.methods() == {"GET"}
    cluster.add(KEDA, "scaledobjects", k.scaled_object())
    await backend.set_desired(2)
    await backend.release_pin()
    cluster.objects[(KEDA, "scaledobjects")].clear()
    cluster.add(HPA, "horizontalpodautoscalers", k.hpa())
    await backend.set_desired(2)
    await backend.release_pin()
    cluster.objects[(HPA, "horizontalpodautoscalers")].clear()
    await backend.set_desired(1)
    allowed = (
        "/apis/apps/v1/namespaces/cortex/deployments/cortex-worker/scale",
        "/apis/keda.sh/v1alpha1/namespaces/cortex/scaledobjects/cortex-worker",
        "/apis/autoscaling/v2/namespaces/cortex/horizontalpodautoscalers/cortex-worker",
    )
    sent = writes(cluster)
    assert {m for m, _ in sent} == {"PATCH"}
    assert {p for _, p in sent} == set(allowed)


def test_in_cluster_config_inside_a_pod(
    kube_api: FakeKubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No kubeconfig and KUBERNETES_SERVICE_HOST set: the pod's service
    account (token, CA, namespace files) is used."""
    from kubernetes.config import incluster_config

    from cortex_core.cluster import api as api_module

    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(kube_api.token)
    (sa / "ca.crt").write_text("not used: no request is sent\n")
    (sa / "namespace").write_text("cortex-prod\n")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(sa / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(sa / "ca.crt"))
    monkeypatch.setattr(api_module, "_SA_NAMESPACE", sa / "namespace")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    api = ClusterAPI.connect()
    try:
        assert api.target.in_cluster is True
        assert (api.target.context, api.target.namespace) == (
            "in-cluster",
            "cortex-prod",
        )
        cfg = api.api_client.configuration
        assert cfg.host == "https://127.0.0.1:6443"
        token = cfg.get_api_key_with_prefix("BearerToken")
        assert token.lower() == f"bearer {kube_api.token}"
        # A namespace flag wins over the pod's own.
        assert ClusterAPI.connect(namespace="other").target.namespace == "other"
    finally:
        api.close()
    assert kube_api.requests == []


async def test_no_count_is_written_when_the_owner_is_unknown(
    cluster: FakeKubeAPI, backend: KubernetesBackend
) -> None:
    """An HPA the operator may not list could own the count: scaling is
    refused with the reason rather than writing a count it might revert."""
    cluster.refuse("horizontalpodautoscalers", 403)
    with pytest.raises(BackendError) as info:
        await backend.scale(1)
    line = str(info.value)
    assert line.startswith("not scaling: cannot tell whether an autoscaler owns")
    assert 'verb "list" on "horizontalpodautoscalers"' in line
    assert writes(cluster) == []
    cluster.clear_rules()
    assert await backend.scale(1) == 4
