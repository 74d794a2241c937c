"""Cluster mode end to end: the control plane and the ``cortex`` command with
the Kubernetes backend, on the test Redis and the fake Kubernetes API."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from helpers import wait_for

from cortex_core import cli
from cortex_core.backends.kubernetes import KEDA_PAUSED, KubernetesBackend
from cortex_core.config import Settings
from cortex_core.errors import BackendError
from cortex_core.heartbeat import WorkerInfo
from cortex_core.system import System
from tests.fakes import kube_api as k
from tests.fakes.kube_api import FakeKubeAPI

KEDA = "keda.sh/v1alpha1"


def cluster(fake: FakeKubeAPI) -> None:
    fake.add("apps/v1", "deployments", k.deployment(replicas=2))
    fake.add("v1", "pods", k.pod("cortex-worker-a", node="node-a", restarts=1))
    fake.add("v1", "pods", k.pod("cortex-worker-b", node="node-b", ready=False))
    fake.add("v1", "pods", k.pod("cortex-worker-done", phase="Succeeded"))
    fake.add(
        "metrics.k8s.io/v1beta1",
        "pods",
        k.pod_metrics("cortex-worker-a", cpu="500m", memory="100Mi"),
    )


async def test_snapshot_joins_pods_with_heartbeats(
    kube_api: FakeKubeAPI, kubeconfig: Path, settings: Settings
) -> None:
    cluster(kube_api)
    kube_api.add(KEDA, "scaledobjects", k.scaled_object(paused=3))
    s = settings.replace(backend="kubernetes", kubeconfig=kubeconfig)
    async with System.open(s, start_workers=False) as system:
        beat = WorkerInfo(
            worker_id="cortex-worker-a",
            host="cortex-worker-a",
            pid=1,
            started_at=time.time(),
            current=["t1", "t2"],
            done=5,
            tokens=1234,
        )
        await system.services.heartbeats.beat(beat)
        snap = await system.control.snapshot()
        h = snap.header
        assert (h.kube_context, h.kube_namespace) == ("fake", "cortex")
        assert h.autoscaler == "keda cortex-worker pinned at 3"
        assert h.pinned == 3 and h.desired_workers == 3
        info = await system.control.scale_info()
        assert (info.desired, info.can_scale, info.maximum) == (3, True, 500)
        assert info.owner == "autoscaler keda cortex-worker pinned at 3"
        rows = {w.name: w for w in snap.workers}
        assert set(rows) == {"cortex-worker-a", "cortex-worker-b"}
        a, b = rows["cortex-worker-a"], rows["cortex-worker-b"]
        assert (a.state, a.node, a.restarts, a.done, a.tokens) == (
            "running",
            "node-a",
            1,
            5,
            1234,
        )
        assert a.current == ("t1", "t2")
        assert a.cpu_percent == 50.0 and a.rss_bytes == 100 * 1024 * 1024
        assert (b.state, b.cpu_percent, b.rss_bytes) == ("not ready", None, None)
        # The pin is released through the control plane.
        assert await system.control.release_pin() == "keda cortex-worker 1-8"
        so = kube_api.get(KEDA, "scaledobjects", "cortex", "cortex-worker")
        assert KEDA_PAUSED not in so["metadata"]["annotations"]
        try:
            await system.control.release_pin()
        except BackendError as err:
            assert "nothing to release" in str(err)
        else:
            raise AssertionError("a second release must be refused")


async def test_refusal_is_a_notice_and_queues_stay_live(
    kube_api: FakeKubeAPI, kubeconfig: Path, settings: Settings
) -> None:
    cluster(kube_api)
    kube_api.refuse("pods", 403)
    s = settings.replace(backend="kubernetes", kubeconfig=kubeconfig)
    async with System.open(s, start_workers=False) as system:
        snap = await system.control.snapshot()
    assert snap.error is None
    assert snap.queues.in_flight == 0
    (notice,) = [n for n in snap.notices if "kubernetes" in n]
    assert "list pods in namespace cortex: 403 Forbidden" in notice
    assert 'RBAC needed: verb "list" on "pods"' in notice


def cortex(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``cortex ARGS`` in this process: (exit status, stdout, stderr). The
    root logger is left as it was found."""
    handlers, level = logging.root.handlers[:], logging.root.level
    try:
        status = cli.main(list(args))
    finally:
        logging.root.handlers[:] = handlers
        logging.root.setLevel(level)
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_status_and_scale_in_cluster_mode(
    kube_api: FakeKubeAPI,
    kubeconfig: Path,
    child_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster(kube_api)
    for name, value in child_env.items():
        if name.startswith("CORTEX_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("CORTEX_BACKEND", "kubernetes")
    monkeypatch.setenv("CORTEX_KUBECONFIG", str(kubeconfig))
    status, out, err = cortex(capsys, "status", "--json")
    assert status == 0, err
    assert json.loads(out)["kubernetes"] == {
        "context": "fake",
        "namespace": "cortex",
        "desired": 2,
        "autoscaler": "none",
        "pinned": None,
    }
    status, out, err = cortex(capsys, "scale", "0")
    assert status == 2
    assert err.startswith("cortex: scale: 0 stops every worker pod") and "--yes" in err
    deploy = kube_api.get("apps/v1", "deployments", "cortex", "cortex-worker")
    assert deploy["spec"]["replicas"] == 2
    status, out, err = cortex(capsys, "scale", "+2")
    assert (status, out.strip()) == (0, "desired workers: 4"), err
    assert deploy["spec"]["replicas"] == 4
    kube_api.add(KEDA, "scaledobjects", k.scaled_object())
    status, out, err = cortex(capsys, "scale", "0", "--yes")
    assert status == 0, err
    assert "pinned: keda cortex-worker pinned at 0" in out
    assert deploy["spec"]["replicas"] == 4
    status, out, err = cortex(capsys, "unpin")
    assert status == 0, err
    assert "keda cortex-worker 1-8" in out
    kube_api.refuse("deployments/scale", 403, "PATCH")
    kube_api.objects[(KEDA, "scaledobjects")].clear()
    status, out, err = cortex(capsys, "scale", "3")
    assert status == 2
    (line,) = [x for x in err.splitlines() if x.strip()]
    assert line.startswith("cortex: kubernetes: patch deployments/scale cortex-worker")
    assert 'RBAC needed: verb "patch" on "deployments/scale"' in line


async def test_console_mode_watches_the_pods_in_the_background(
    kube_api: FakeKubeAPI, kubeconfig: Path, settings: Settings
) -> None:
    """With start_workers (what the console passes in cluster mode) the
    backend polls, and snapshots read its latest look."""
    cluster(kube_api)
    s = settings.replace(backend="kubernetes", kubeconfig=kubeconfig)
    async with System.open(s, start_workers=True) as system:
        backend = system.backend
        assert isinstance(backend, KubernetesBackend)
        await wait_for(lambda: backend.last.pods, "the poller's first look")
        # A snapshot takes the poller's latest look instead of asking again.
        assert await backend.view() is backend.last
        snap = await system.control.snapshot()
        assert {w.name for w in snap.workers} == {"cortex-worker-a", "cortex-worker-b"}
        kube_api.add("v1", "pods", k.pod("cortex-worker-c"))
        await wait_for(
            lambda: len(backend.last.pods) == 3, "the new pod in a later look"
        )
