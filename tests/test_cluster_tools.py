"""The read-only cluster tools against the fake Kubernetes API, through the real
``kubernetes`` client and a kubeconfig file."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cortex_core.cluster.api import ClusterAPI
from cortex_core.cluster.tools import ClusterToolbox
from cortex_core.errors import ClusterError
from tests.fakes import kube_api as k
from tests.fakes.kube_api import FakeKubeAPI


@pytest.fixture
def cluster(kube_api: FakeKubeAPI) -> FakeKubeAPI:
    kube_api.add("v1", "pods", k.pod("web-1", namespace="shop", restarts=3))
    kube_api.add(
        "v1",
        "pods",
        k.pod("web-2", namespace="shop", ready=False, phase="Pending", node="node-b"),
    )
    kube_api.add("v1", "pods", k.pod("db-1", namespace="shop", labels={"app": "db"}))
    kube_api.add("v1", "pods", k.pod("other", namespace="secret-ns"))
    kube_api.add("v1", "nodes", k.node("node-a"))
    kube_api.add("v1", "nodes", k.node("node-b", pressure="MemoryPressure"))
    kube_api.add("v1", "events", k.event("e1", namespace="shop", ago=300))
    kube_api.add(
        "v1",
        "events",
        k.event("e2", namespace="shop", reason="FailedMount", ago=10),
    )
    kube_api.add("v1", "events", k.event("n1", namespace="shop", type_="Normal"))
    kube_api.add("v1", "services", k.service("web", namespace="shop"))
    kube_api.add(
        "v1", "endpoints", k.endpoints("web", namespace="shop", ready=2, not_ready=1)
    )
    kube_api.add(
        "apps/v1",
        "deployments",
        k.deployment("web", namespace="shop", replicas=3, ready=2),
    )
    kube_api.add(
        "metrics.k8s.io/v1beta1",
        "pods",
        k.pod_metrics("web-1", namespace="shop", cpu="250m", memory="128Mi"),
    )
    kube_api.add("metrics.k8s.io/v1beta1", "nodes", k.node_metrics("node-a"))
    return kube_api


@pytest.fixture
def toolbox(kubeconfig: Path) -> Iterator[ClusterToolbox]:
    api = ClusterAPI.connect(kubeconfig=kubeconfig, timeout=2.0)
    yield ClusterToolbox(api, namespaces=["shop", "cortex"])
    api.close()


async def items(box: ClusterToolbox, name: str, **args: Any) -> list[dict[str, Any]]:
    outcome = await box.call(name, args)
    assert not outcome.is_error, outcome.content
    body = json.loads(outcome.content)
    assert body["tool"] == name
    result: list[dict[str, Any]] = body["items"]
    return result


async def test_pods_by_namespace_and_selector(
    cluster: FakeKubeAPI, toolbox: ClusterToolbox
) -> None:
    pods = await items(
        toolbox,
        "list_pods",
        namespace="shop",
        label_selector="app.kubernetes.io/name=cortex-worker",
    )
    assert [p["name"] for p in pods] == ["web-1", "web-2"]
    assert pods[0] | {"age": None} == {
        "name": "web-1",
        "phase": "Running",
        "ready": "1/1",
        "restarts": 3,
        "node": "node-a",
        "age": None,
    }
    assert pods[0]["age"] == "10m"
    assert pods[1]["phase"] == "Pending" and pods[1]["ready"] == "0/1"
    everything = await items(toolbox, "list_pods", namespace="shop")
    assert len(everything) == 3
    assert "labelSelector=app.kubernetes.io" in cluster.requests[0].query


async def test_usage_events_services_deployments_nodes(
    cluster: FakeKubeAPI, toolbox: ClusterToolbox
) -> None:
    usage = await items(toolbox, "pod_usage", namespace="shop")
    assert usage == [{"name": "web-1", "cpu_millicores": 250, "memory_mib": 128}]
    nodes = await items(toolbox, "node_usage")
    assert nodes == [{"name": "node-a", "cpu_millicores": 1200, "memory_mib": 2048}]

    events = await items(toolbox, "warning_events", namespace="shop")
    assert [e["reason"] for e in events] == ["FailedMount", "BackOff"]
    assert events[0]["object"] == "Pod/web-1"

    services = await items(toolbox, "list_services", namespace="shop")
    assert services == [
        {
            "name": "web",
            "type": "ClusterIP",
            "ports": ["80/TCP"],
            "ready_endpoints": 2,
            "not_ready_endpoints": 1,
        }
    ]
    deployments = await items(toolbox, "list_deployments", namespace="shop")
    assert deployments == [
        {"name": "web", "desired": 3, "ready": 2, "available": 2, "updated": 3}
    ]
    conditions = await items(toolbox, "node_conditions")
    assert conditions[0]["ready"] is True and conditions[0]["problems"] == []
    assert conditions[1]["problems"][0]["type"] == "MemoryPressure"


async def test_only_reads_are_ever_sent(
    cluster: FakeKubeAPI, toolbox: ClusterToolbox
) -> None:
    for spec in toolbox.specs():
        args = (
            {"namespace": "shop"}
            if "namespace" in spec.input_schema["properties"]
            else {}
        )
        await toolbox.call(spec.name, args)
    assert len(cluster.requests) >= len(toolbox.specs())
    assert cluster.methods() == {"GET"}
    assert all(
        "watch=true" not in r.query or r.method == "GET" for r in cluster.requests
    )


async def test_arguments_are_validated(
    cluster: FakeKubeAPI, toolbox: ClusterToolbox
) -> None:
    cases = [
        ("list_pods", {}, "namespace: Field required"),
        ("list_pods", {"namespace": "Shop!"}, "namespace: String should match"),
        ("list_pods", {"namespace": "shop", "limit": 0}, "limit: Input should be"),
        ("list_pods", {"namespace": "shop", "limit": "5"}, "limit: Input should be"),
        ("list_pods", {"namespace": "shop", "verb": "delete"}, "verb: Extra inputs"),
        (
            "list_pods",
            {"namespace": "shop", "label_selector": "a=$(rm -rf /)"},
            "label_selector: String should match",
        ),
        ("delete_pod", {"namespace": "shop"}, "unknown tool 'delete_pod'"),
    ]
    for name, args, expected in cases:
        outcome = await toolbox.call(name, args)
        assert outcome.is_error
        assert expected in outcome.content, outcome.content
    assert cluster.requests == []


async def test_namespace_outside_scope_is_refused(
    cluster: FakeKubeAPI, toolbox: ClusterToolbox
) -> None:
    outcome = await toolbox.call("list_pods", {"namespace": "secret-ns"})
    assert outcome.is_error
    assert "refused" in outcome.content and "shop, cortex" in outcome.content
    assert cluster.requests == []


async def test_specs_are_json_schema(toolbox: ClusterToolbox) -> None:
    specs = {s.name: s for s in toolbox.specs()}
    assert set(specs) == {
        "list_pods",
        "pod_usage",
        "node_usage",
        "warning_events",
        "list_services",
        "list_deployments",
        "node_conditions",
    }
    schema = specs["list_pods"].to_api()["input_schema"]
    assert schema["type"] == "object"
    assert schema["required"] == ["namespace"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["limit"]["maximum"] == 200


async def test_output_is_capped(kube_api: FakeKubeAPI, kubeconfig: Path) -> None:
    for i in range(150):
        kube_api.add(
            "v1", "pods", k.pod(f"pod-with-a-long-name-{i:03d}", namespace="shop")
        )
    api = ClusterAPI.connect(kubeconfig=kubeconfig, timeout=2.0)
    try:
        box = ClusterToolbox(api, namespaces=["shop"], max_chars=2000)
        outcome = await box.call("list_pods", {"namespace": "shop", "limit": 200})
    finally:
        api.close()
    assert not outcome.is_error
    assert len(outcome.content) <= 2000
    body = json.loads(outcome.content)
    assert body["total"] == 150 and 0 < body["shown"] < 150
    assert len(body["items"]) == body["shown"]
    assert "more not shown" in body["note"]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, "401 Unauthorized"),
        (
            403,
            'RBAC needed: verb "list" on "pods" (apiGroup "") in a Role in '
            "namespace shop",
        ),
        (404, "404 Not Found"),
        (503, "503 Service Unavailable"),
    ],
)
async def test_api_errors_are_outcomes(
    cluster: FakeKubeAPI, toolbox: ClusterToolbox, status: int, expected: str
) -> None:
    cluster.refuse("pods", status)
    outcome = await toolbox.call("list_pods", {"namespace": "shop"})
    assert outcome.is_error
    assert outcome.content.startswith("kubernetes: list pods in namespace shop: ")
    assert expected in outcome.content


async def test_metrics_api_missing(
    cluster: FakeKubeAPI, toolbox: ClusterToolbox
) -> None:
    cluster.refuse("metrics.k8s.io/v1beta1", 404)
    outcome = await toolbox.call("node_usage", {})
    assert outcome.is_error
    assert "list nodes" in outcome.content
    assert "is metrics-server installed?" in outcome.content


async def test_hanging_api_times_out(
    cluster: FakeKubeAPI, kubeconfig: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cluster.hang("deployments", 30)
    api = ClusterAPI.connect(kubeconfig=kubeconfig, timeout=0.5)
    caplog.set_level(logging.DEBUG)
    try:
        box = ClusterToolbox(api, namespaces=["shop"])
        outcome = await box.call("list_deployments", {"namespace": "shop"})
    finally:
        api.close()
    assert outcome.is_error
    assert (
        "list deployments in namespace shop: no answer within 0.5s" in outcome.content
    )
    assert len([r for r in cluster.requests if "deployments" in r.path]) == 1
    assert cluster.token not in caplog.text


async def test_malformed_reply_is_an_outcome(
    kube_api: FakeKubeAPI, kubeconfig: Path
) -> None:
    bad = k.pod("bad", namespace="shop")
    bad["status"]["containerStatuses"][0]["restartCount"] = "many"
    kube_api.add("v1", "pods", bad)
    api = ClusterAPI.connect(kubeconfig=kubeconfig, timeout=2.0)
    try:
        outcome = await ClusterToolbox(api, namespaces=["*"]).call(
            "list_pods", {"namespace": "shop"}
        )
    finally:
        api.close()
    assert outcome.is_error
    assert "list pods in namespace shop: malformed reply" in outcome.content


def test_kubeconfig_errors_name_the_problem(kubeconfig: Path, tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match=r"no context named 'prod'.*have: fake"):
        ClusterAPI.connect(kubeconfig=kubeconfig, context="prod")
    with pytest.raises(ClusterError, match="kubeconfig:"):
        ClusterAPI.connect(kubeconfig=tmp_path / "missing")
    api = ClusterAPI.connect(kubeconfig=kubeconfig, namespace="shop")
    assert (api.target.context, api.target.namespace) == ("fake", "shop")
    api.close()
    api = ClusterAPI.connect(kubeconfig=kubeconfig)
    assert api.target.namespace == "cortex"
    api.close()
