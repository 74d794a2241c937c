"""The Kubernetes backend: the worker Deployment's pods, and scaling that
respects whoever owns the replica count.

Pods are found through the Deployment's scale subresource (its selector), with
completed and failed pods left out; CPU and memory come from the metrics API
and read "n/a" when it is missing. A manual scale writes the scale subresource
when no autoscaler owns the Deployment; with a KEDA ScaledObject it pins the
count through KEDA's paused-replicas annotation, with an HPA through its
minimum and maximum (the originals kept in annotations for the release). It
never writes a count that an autoscaler would revert.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, overload

from cortex_core.aio import raise_if_cancelled
from cortex_core.cluster.api import Call, ClusterAPI, quantity
from cortex_core.config import Settings
from cortex_core.errors import BackendError, ClusterError

logger = logging.getLogger(__name__)

MAX_REPLICAS = 500
KEDA_PAUSED = "autoscaling.keda.sh/paused-replicas"
HPA_MIN_KEPT = "cortex.dev/unpinned-min-replicas"
HPA_MAX_KEPT = "cortex.dev/unpinned-max-replicas"
_KEDA = ("keda.sh", "v1alpha1", "scaledobjects")
_METRICS = ("metrics.k8s.io", "v1beta1")
_DONE_PHASES = ("Succeeded", "Failed")


@dataclass(frozen=True)
class PodRow:
    """One worker pod as the API shows it."""

    name: str
    phase: str
    ready: bool
    restarts: int
    node: str
    started_at: float | None
    cpu_percent: float | None = None
    """Of one core, like ``ps``; None when the metrics API has no figure."""
    memory_bytes: int | None = None
    terminating: bool = False

    @property
    def state(self) -> str:
        if self.terminating:
            return "terminating"
        if self.phase == "Running":
            return "running" if self.ready else "not ready"
        return self.phase.lower() or "unknown"


@dataclass(frozen=True)
class Autoscaler:
    """Who owns the replica count besides the operator."""

    kind: str
    """``keda`` or ``hpa``."""
    name: str
    min_replicas: int
    max_replicas: int
    pinned: int | None = None
    """The count a manual scale pinned, until released."""

    def describe(self) -> str:
        if self.pinned is not None:
            return f"{self.kind} {self.name} pinned at {self.pinned}"
        return f"{self.kind} {self.name} {self.min_replicas}-{self.max_replicas}"


@dataclass(frozen=True)
class ClusterView:
    """What one look at the cluster found."""

    desired: int | None = None
    pods: tuple[PodRow, ...] = ()
    autoscaler: Autoscaler | None = None
    metrics: bool = False
    """Whether CPU and memory came from the metrics API."""
    error: str | None = None
    owner_error: str | None = None
    """Why the autoscaler lookup failed, if it did: no count is written then,
    since it might be one an unseen autoscaler reverts."""
    at: float = field(default_factory=time.time)


class KubernetesBackend:
    """Reads and scales the worker Deployment."""

    kind = "kubernetes"

    def __init__(self, settings: Settings, api: ClusterAPI) -> None:
        self.settings = settings
        self.api = api
        self.namespace = api.target.namespace
        self.deployment = settings.worker_deployment
        self.desired: int | None = None
        self.last = ClusterView()
        self._polling = False

    # Reading -------------------------------------------------------------------

    async def refresh(self) -> ClusterView:
        """Look at the Deployment, its pods, their usage and its autoscaler."""
        try:
            scale = await self._read_scale()
        except ClusterError as err:
            self.last = replace(self.last, error=str(err), at=time.time())
            return self.last
        desired = _int(_get(scale, "spec", "replicas"), 0)
        selector = str(_get(scale, "status", "selector") or "")
        if not selector:
            error = (
                f"kubernetes: deployment {self.deployment} in namespace "
                f"{self.namespace} reports no label selector"
            )
            self.last = ClusterView(desired=desired, error=error)
            return self.last
        pods, usage, owner = await asyncio.gather(
            self._pods(selector),
            self._usage(selector),
            self._autoscaler(),
            return_exceptions=True,
        )
        for result in (pods, usage, owner):
            if isinstance(result, BaseException) and not isinstance(
                result, ClusterError
            ):
                raise result
        errors = [str(r) for r in (pods, owner) if isinstance(r, ClusterError)]
        rows = self.last.pods
        if isinstance(pods, list):
            figures = usage if isinstance(usage, dict) else {}
            rows = tuple(_with_usage(p, figures.get(p.name)) for p in pods)
        autoscaler = self.last.autoscaler
        if not isinstance(owner, BaseException):
            autoscaler = owner
        pinned = autoscaler.pinned if autoscaler is not None else None
        self.desired = pinned if pinned is not None else desired
        self.last = ClusterView(
            desired=desired,
            pods=rows,
            autoscaler=autoscaler,
            metrics=isinstance(usage, dict),
            error="; ".join(errors) or None,
            owner_error=str(owner) if isinstance(owner, ClusterError) else None,
        )
        return self.last

    async def view(self) -> ClusterView:
        """The poller's latest look, or a fresh one when nothing polls."""
        if self._polling:
            return self.last
        return await self.refresh()

    async def poll(self, interval: float = 2.0) -> None:
        """Refresh every ``interval`` seconds until cancelled."""
        self._polling = True
        try:
            while True:
                try:
                    await self.refresh()
                except Exception:  # the poller outlives one bad look
                    logger.exception(
                        "kubernetes backend: refreshing deployment %s/%s failed",
                        self.namespace,
                        self.deployment,
                    )
                raise_if_cancelled()
                await asyncio.sleep(interval)
        finally:
            self._polling = False

    async def read_desired(self) -> int | None:
        return (await self.view()).desired

    async def _read_scale(self) -> dict[str, Any]:
        reply = await self.api.call(
            Call("get", "deployments/scale", "apps", self.namespace, self.deployment),
            self.api.apps.read_namespaced_deployment_scale,
            self.deployment,
            self.namespace,
        )
        return dict(reply.to_dict())

    async def _pods(self, selector: str) -> list[PodRow]:
        reply = await self.api.call(
            Call("list", "pods", namespace=self.namespace),
            self.api.core.list_namespaced_pod,
            self.namespace,
            label_selector=selector,
        )
        rows = []
        for p in reply.items or []:
            status = p.status
            phase = (status.phase if status else None) or "Unknown"
            if phase in _DONE_PHASES:
                continue
            statuses = (status.container_statuses if status else None) or []
            conditions = (status.conditions if status else None) or []
            ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
            created = p.metadata.creation_timestamp
            rows.append(
                PodRow(
                    name=p.metadata.name,
                    phase=phase,
                    ready=ready,
                    restarts=sum(s.restart_count or 0 for s in statuses),
                    node=(p.spec.node_name if p.spec else None) or "",
                    started_at=created.timestamp()
                    if isinstance(created, dt.datetime)
                    else None,
                    terminating=p.metadata.deletion_timestamp is not None,
                )
            )
        return sorted(rows, key=lambda r: r.name)

    async def _usage(self, selector: str) -> dict[str, tuple[float, int]]:
        """CPU percent and memory bytes per pod; raises ClusterError when the
        metrics API is missing, refuses or is unavailable."""
        reply = await self.api.call(
            Call("list", "pods", "metrics.k8s.io", self.namespace),
            self.api.custom.list_namespaced_custom_object,
            *_METRICS,
            self.namespace,
            "pods",
            label_selector=selector,
        )
        out: dict[str, tuple[float, int]] = {}
        items = reply.get("items") if isinstance(reply, dict) else None
        for item in items if isinstance(items, list) else []:
            name = _get(item, "metadata", "name")
            containers = _get(item, "containers")
            if not isinstance(name, str) or not isinstance(containers, list):
                continue
            cpu = Decimal(0)
            mem = Decimal(0)
            for c in containers:
                cpu += quantity(_get(c, "usage", "cpu")) or 0
                mem += quantity(_get(c, "usage", "memory")) or 0
            out[name] = (float(cpu * 100), int(mem))
        return out

    async def _autoscaler(self) -> Autoscaler | None:
        """The ScaledObject or HPA whose target is the Deployment, if any."""
        keda = await self._scaled_object()
        if keda is not None:
            return keda
        return await self._hpa()

    async def _scaled_object(self) -> Autoscaler | None:
        try:
            reply = await self.api.call(
                Call("list", "scaledobjects", "keda.sh", self.namespace),
                self.api.custom.list_namespaced_custom_object,
                *_KEDA[:2],
                self.namespace,
                _KEDA[2],
            )
        except ClusterError as err:
            if err.status == 404:
                return None  # KEDA is not installed in this cluster.
            raise
        items = reply.get("items") if isinstance(reply, dict) else None
        for item in items if isinstance(items, list) else []:
            ref = _get(item, "spec", "scaleTargetRef") or {}
            kind = _get(ref, "kind") or "Deployment"
            if _get(ref, "name") != self.deployment or kind != "Deployment":
                continue
            paused = _get(item, "metadata", "annotations", KEDA_PAUSED)
            return Autoscaler(
                "keda",
                str(_get(item, "metadata", "name")),
                _int(_get(item, "spec", "minReplicaCount"), 0),
                _int(_get(item, "spec", "maxReplicaCount"), 100),
                pinned=_int(paused, None),
            )
        return None

    async def _hpa(self) -> Autoscaler | None:
        reply = await self.api.call(
            Call("list", "horizontalpodautoscalers", "autoscaling", self.namespace),
            self.api.autoscaling.list_namespaced_horizontal_pod_autoscaler,
            self.namespace,
        )
        for h in reply.items or []:
            ref = h.spec.scale_target_ref
            if ref.kind != "Deployment" or ref.name != self.deployment:
                continue
            annotations = h.metadata.annotations or {}
            low = h.spec.min_replicas if h.spec.min_replicas is not None else 1
            pinned = low if HPA_MIN_KEPT in annotations else None
            return Autoscaler(
                "hpa", h.metadata.name, low, h.spec.max_replicas, pinned=pinned
            )
        return None

    # Scaling -------------------------------------------------------------------

    async def scale(self, delta: int) -> int:
        view = await self.refresh()
        if view.desired is None:
            raise BackendError(view.error or "kubernetes: the worker count is unknown")
        pinned = view.autoscaler.pinned if view.autoscaler else None
        current = pinned if pinned is not None else view.desired
        target = current + delta
        if not 0 <= target <= MAX_REPLICAS:
            raise BackendError(
                f"cannot scale by {delta:+d}: {current} workers now, the count "
                f"must stay between 0 and {MAX_REPLICAS}"
            )
        return await self.set_desired(target, view=view)

    async def set_desired(self, count: int, *, view: ClusterView | None = None) -> int:
        """Set the worker count in the way the count's owner keeps it."""
        if not 0 <= count <= MAX_REPLICAS:
            raise BackendError(
                f"worker count must be between 0 and {MAX_REPLICAS}, got {count}"
            )
        view = view or await self.refresh()
        if view.desired is None and view.error:
            raise BackendError(view.error)
        if view.owner_error is not None:
            raise BackendError(
                "not scaling: cannot tell whether an autoscaler owns the worker "
                f"count ({view.owner_error})"
            )
        owner = view.autoscaler
        try:
            if owner is None:
                await self._patch_scale(count)
            elif owner.kind == "keda":
                await self._patch_keda(owner.name, {KEDA_PAUSED: str(count)})
            else:
                await self._pin_hpa(owner, count)
        except ClusterError as err:
            raise BackendError(str(err)) from err
        how = "directly" if owner is None else f"pinned through {owner.kind}"
        logger.info(
            "kubernetes backend: deployment %s/%s set to %d workers (%s)",
            self.namespace,
            self.deployment,
            count,
            how,
        )
        self.desired = count
        with contextlib.suppress(ClusterError):
            await self.refresh()
        return count

    async def release_pin(self) -> str:
        """Hand the count back to the autoscaler; say what it now does."""
        view = await self.refresh()
        owner = view.autoscaler
        if owner is None or owner.pinned is None:
            raise BackendError("nothing to release: no autoscaler pin is set")
        try:
            if owner.kind == "keda":
                await self._patch_keda(owner.name, {KEDA_PAUSED: None})
            else:
                await self._unpin_hpa(owner.name)
        except ClusterError as err:
            raise BackendError(str(err)) from err
        logger.info(
            "kubernetes backend: %s %s released from %d workers",
            owner.kind,
            owner.name,
            owner.pinned,
        )
        after = await self.refresh()
        return after.autoscaler.describe() if after.autoscaler else owner.kind

    async def _patch_scale(self, count: int) -> None:
        await self.api.call(
            Call("patch", "deployments/scale", "apps", self.namespace, self.deployment),
            self.api.apps.patch_namespaced_deployment_scale,
            self.deployment,
            self.namespace,
            {"spec": {"replicas": count}},
        )

    async def _patch_keda(self, name: str, annotations: dict[str, str | None]) -> None:
        await self.api.call(
            Call("patch", "scaledobjects", "keda.sh", self.namespace, name),
            self.api.custom.patch_namespaced_custom_object,
            *_KEDA[:2],
            self.namespace,
            _KEDA[2],
            name,
            {"metadata": {"annotations": annotations}},
            _content_type="application/merge-patch+json",
        )

    async def _pin_hpa(self, owner: Autoscaler, count: int) -> None:
        if count == 0:
            raise BackendError(
                f"hpa {owner.name} cannot hold 0 replicas: lower its minimum "
                "through the cluster, or use KEDA, which can scale to zero"
            )
        annotations: dict[str, str] = {}
        if owner.pinned is None:
            annotations = {
                HPA_MIN_KEPT: str(owner.min_replicas),
                HPA_MAX_KEPT: str(owner.max_replicas),
            }
        body: dict[str, Any] = {"spec": {"minReplicas": count, "maxReplicas": count}}
        if annotations:
            body["metadata"] = {"annotations": annotations}
        await self._patch_hpa(owner.name, body)

    async def _unpin_hpa(self, name: str) -> None:
        reply = await self.api.call(
            Call(
                "get", "horizontalpodautoscalers", "autoscaling", self.namespace, name
            ),
            self.api.autoscaling.read_namespaced_horizontal_pod_autoscaler,
            name,
            self.namespace,
        )
        kept = reply.metadata.annotations or {}
        low = _int(kept.get(HPA_MIN_KEPT), 1)
        high = _int(kept.get(HPA_MAX_KEPT), max(low, reply.spec.max_replicas))
        await self._patch_hpa(
            name,
            {
                "metadata": {"annotations": {HPA_MIN_KEPT: None, HPA_MAX_KEPT: None}},
                "spec": {"minReplicas": max(1, low), "maxReplicas": max(low, high)},
            },
        )

    async def _patch_hpa(self, name: str, body: dict[str, Any]) -> None:
        await self.api.call(
            Call(
                "patch", "horizontalpodautoscalers", "autoscaling", self.namespace, name
            ),
            self.api.autoscaling.patch_namespaced_horizontal_pod_autoscaler,
            name,
            self.namespace,
            body,
        )

    async def stop_all(self, grace: float | None = None) -> None:
        """The cluster runs the workers; closing only lets go of the API."""
        self.api.close()


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _with_usage(pod: PodRow, figures: tuple[float, int] | None) -> PodRow:
    if figures is None:
        return pod
    return replace(pod, cpu_percent=figures[0], memory_bytes=figures[1])


@overload
def _int(value: Any, default: int) -> int: ...
@overload
def _int(value: Any, default: None) -> int | None: ...
def _int(value: Any, default: int | None) -> int | None:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value)
    return default
