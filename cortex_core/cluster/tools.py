"""Read-only cluster tools a model may call, as a :class:`~cortex_core.tools.Toolbox`.

Every tool only gets or lists; none runs a shell or writes. Arguments are
checked against the same pydantic model that produced the JSON schema sent to
the model; a namespace outside the configured scope is refused; what a tool
returns is compact JSON capped at ``max_chars``; an API failure is an error
outcome naming the call and the RBAC it needs.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cortex_core.cluster.api import Call, ClusterAPI, quantity
from cortex_core.errors import ClusterError
from cortex_core.tools import ToolOutcome, ToolSpec

logger = logging.getLogger(__name__)

#: Longest text one tool call returns.
DEFAULT_MAX_CHARS = 8_000
_TEXT_MAX = 240

Namespace = Annotated[
    str,
    Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Kubernetes namespace",
    ),
]
LabelSelector = Annotated[
    str,
    Field(
        max_length=256,
        pattern=r"^[A-Za-z0-9_./=!,() -]*$",
        description="label selector such as 'app=web,tier!=cache' (empty: all)",
    ),
]
Limit = Annotated[int, Field(ge=1, le=200, description="most items to return")]


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class NamespacedArgs(_Args):
    namespace: Namespace
    label_selector: LabelSelector = ""
    limit: Limit = 50


class EventArgs(_Args):
    namespace: Namespace
    limit: Limit = 20


class NodeArgs(_Args):
    limit: Limit = 50


Handler = Callable[[Any], Awaitable[list[dict[str, Any]]]]


@dataclass(frozen=True)
class _Tool:
    spec: ToolSpec
    args: type[_Args]
    run: Handler


class ClusterToolbox:
    """The read-only tools, scoped to the namespaces the settings allow."""

    def __init__(
        self,
        api: ClusterAPI,
        *,
        namespaces: Sequence[str],
        max_chars: int = DEFAULT_MAX_CHARS,
    ) -> None:
        self.api = api
        self.namespaces = tuple(namespaces)
        self.max_chars = max_chars
        self._tools: dict[str, _Tool] = {}
        self._add(
            "list_pods",
            "Pods with phase, readiness (ready/total containers), restarts, node "
            "and age, by namespace and label selector.",
            NamespacedArgs,
            self._pods,
        )
        self._add(
            "pod_usage",
            "CPU (millicores) and memory (MiB) of pods from the metrics API.",
            NamespacedArgs,
            self._pod_usage,
        )
        self._add(
            "node_usage",
            "CPU (millicores) and memory (MiB) of nodes from the metrics API.",
            NodeArgs,
            self._node_usage,
        )
        self._add(
            "warning_events",
            "Recent Warning events in a namespace, newest first.",
            EventArgs,
            self._events,
        )
        self._add(
            "list_services",
            "Services with their type, ports and ready / not-ready endpoints.",
            NamespacedArgs,
            self._services,
        )
        self._add(
            "list_deployments",
            "Deployments with desired, ready, available and updated replicas.",
            NamespacedArgs,
            self._deployments,
        )
        self._add(
            "node_conditions",
            "Nodes with readiness and any pressure or other abnormal condition.",
            NodeArgs,
            self._node_conditions,
        )

    def _add(self, name: str, text: str, args: type[_Args], run: Handler) -> None:
        schema = args.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        self._tools[name] = _Tool(ToolSpec(name, text, schema), args, run)

    # Toolbox -------------------------------------------------------------------

    def specs(self) -> Sequence[ToolSpec]:
        return [t.spec for t in self._tools.values()]

    async def call(self, name: str, arguments: Mapping[str, Any]) -> ToolOutcome:
        tool = self._tools.get(name)
        if tool is None:
            known = ", ".join(self._tools)
            return ToolOutcome(f"unknown tool {name!r}; tools: {known}", True)
        try:
            args = tool.args.model_validate(dict(arguments))
        except ValidationError as err:
            return ToolOutcome(f"{name}: invalid arguments: {_errors(err)}", True)
        namespace = getattr(args, "namespace", None)
        if namespace is not None and not self._allowed(namespace):
            allowed = ", ".join(self.namespaces) or "none"
            return ToolOutcome(
                f"{name}: refused: namespace {namespace!r} is outside this "
                f"deployment's scope (allowed: {allowed})",
                True,
            )
        try:
            items = await tool.run(args)
        except ClusterError as err:
            logger.info("cluster tool %s: %s", name, err)
            return ToolOutcome(str(err), True)
        return ToolOutcome(self._render(name, items))

    def _allowed(self, namespace: str) -> bool:
        return "*" in self.namespaces or namespace in self.namespaces

    def _render(self, name: str, items: list[dict[str, Any]]) -> str:
        """Compact JSON; items are dropped from the end until it fits."""
        shown = len(items)
        while True:
            body: dict[str, Any] = {"tool": name, "total": len(items), "shown": shown}
            if shown < len(items):
                body["note"] = f"{len(items) - shown} more not shown; narrow the query"
            body["items"] = items[:shown]
            text = json.dumps(body, separators=(",", ":"), default=str)
            if len(text) <= self.max_chars or shown == 0:
                return text[: self.max_chars]
            shown = min(shown - 1, shown * 3 // 4)

    # The tools -----------------------------------------------------------------

    async def _pods(self, a: NamespacedArgs) -> list[dict[str, Any]]:
        call = Call("list", "pods", namespace=a.namespace)
        reply = await self.api.call(
            call,
            self.api.core.list_namespaced_pod,
            a.namespace,
            label_selector=a.label_selector or None,
            limit=a.limit,
        )
        out = []
        for p in reply.items or []:
            statuses = (p.status.container_statuses if p.status else None) or []
            out.append(
                {
                    "name": p.metadata.name,
                    "phase": p.status.phase if p.status else None,
                    "ready": f"{sum(bool(s.ready) for s in statuses)}/{len(statuses)}",
                    "restarts": sum(s.restart_count or 0 for s in statuses),
                    "node": p.spec.node_name if p.spec else None,
                    "age": _age(p.metadata.creation_timestamp),
                }
            )
        return out

    async def _pod_usage(self, a: NamespacedArgs) -> list[dict[str, Any]]:
        call = Call("list", "pods", "metrics.k8s.io", namespace=a.namespace)
        reply = await self.api.call(
            call,
            self.api.custom.list_namespaced_custom_object,
            "metrics.k8s.io",
            "v1beta1",
            a.namespace,
            "pods",
            label_selector=a.label_selector or None,
            limit=a.limit,
        )
        out = []
        for item in _items(reply)[: a.limit]:
            cpu = Decimal(0)
            mem = Decimal(0)
            for c in _list(item.get("containers")):
                usage = c.get("usage") if isinstance(c, dict) else None
                usage = usage if isinstance(usage, dict) else {}
                cpu += quantity(usage.get("cpu")) or 0
                mem += quantity(usage.get("memory")) or 0
            out.append({"name": _name(item), **_usage(cpu, mem)})
        return out

    async def _node_usage(self, a: NodeArgs) -> list[dict[str, Any]]:
        call = Call("list", "nodes", "metrics.k8s.io")
        reply = await self.api.call(
            call,
            self.api.custom.list_cluster_custom_object,
            "metrics.k8s.io",
            "v1beta1",
            "nodes",
            limit=a.limit,
        )
        out = []
        for item in _items(reply)[: a.limit]:
            usage = item.get("usage")
            usage = usage if isinstance(usage, dict) else {}
            cpu = quantity(usage.get("cpu")) or Decimal(0)
            mem = quantity(usage.get("memory")) or Decimal(0)
            out.append({"name": _name(item), **_usage(cpu, mem)})
        return out

    async def _events(self, a: EventArgs) -> list[dict[str, Any]]:
        call = Call("list", "events", namespace=a.namespace)
        reply = await self.api.call(
            call,
            self.api.core.list_namespaced_event,
            a.namespace,
            field_selector="type=Warning",
        )
        events = sorted(
            reply.items or [], key=lambda e: _event_time(e) or _EPOCH, reverse=True
        )
        return [
            {
                "object": f"{e.involved_object.kind}/{e.involved_object.name}",
                "reason": e.reason,
                "message": _clip(e.message),
                "count": e.count or 1,
                "age": _age(_event_time(e)),
            }
            for e in events[: a.limit]
        ]

    async def _services(self, a: NamespacedArgs) -> list[dict[str, Any]]:
        services = await self.api.call(
            Call("list", "services", namespace=a.namespace),
            self.api.core.list_namespaced_service,
            a.namespace,
            label_selector=a.label_selector or None,
            limit=a.limit,
        )
        endpoints = await self.api.call(
            Call("list", "endpoints", namespace=a.namespace),
            self.api.core.list_namespaced_endpoints,
            a.namespace,
        )
        ready: dict[str, tuple[int, int]] = {}
        for ep in endpoints.items or []:
            subsets = ep.subsets or []
            ready[ep.metadata.name] = (
                sum(len(s.addresses or []) for s in subsets),
                sum(len(s.not_ready_addresses or []) for s in subsets),
            )
        out = []
        for s in services.items or []:
            up, down = ready.get(s.metadata.name, (0, 0))
            ports = [f"{p.port}/{p.protocol or 'TCP'}" for p in (s.spec.ports or [])]
            out.append(
                {
                    "name": s.metadata.name,
                    "type": s.spec.type,
                    "ports": ports,
                    "ready_endpoints": up,
                    "not_ready_endpoints": down,
                }
            )
        return out

    async def _deployments(self, a: NamespacedArgs) -> list[dict[str, Any]]:
        reply = await self.api.call(
            Call("list", "deployments", "apps", namespace=a.namespace),
            self.api.apps.list_namespaced_deployment,
            a.namespace,
            label_selector=a.label_selector or None,
            limit=a.limit,
        )
        out = []
        for d in reply.items or []:
            st = d.status
            out.append(
                {
                    "name": d.metadata.name,
                    "desired": d.spec.replicas if d.spec.replicas is not None else 1,
                    "ready": (st.ready_replicas or 0) if st else 0,
                    "available": (st.available_replicas or 0) if st else 0,
                    "updated": (st.updated_replicas or 0) if st else 0,
                }
            )
        return out

    async def _node_conditions(self, a: NodeArgs) -> list[dict[str, Any]]:
        reply = await self.api.call(
            Call("list", "nodes"), self.api.core.list_node, limit=a.limit
        )
        out = []
        for n in reply.items or []:
            conditions = (n.status.conditions if n.status else None) or []
            ready = next((c for c in conditions if c.type == "Ready"), None)
            problems = [
                {"type": c.type, "reason": c.reason, "message": _clip(c.message)}
                for c in conditions
                if c.type != "Ready" and c.status != "False"
            ]
            out.append(
                {
                    "name": n.metadata.name,
                    "ready": ready is not None and ready.status == "True",
                    "ready_reason": ready.reason if ready else None,
                    "problems": problems,
                }
            )
        return out


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _errors(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:5]:
        where = ".".join(str(x) for x in e["loc"]) or "arguments"
        parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)


def _age(when: dt.datetime | None) -> str | None:
    if when is None:
        return None
    seconds = max(0, int((dt.datetime.now(dt.UTC) - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _event_time(e: Any) -> dt.datetime | None:
    when = e.last_timestamp or e.event_time or e.metadata.creation_timestamp
    return when if isinstance(when, dt.datetime) else None


def _clip(text: str | None) -> str:
    text = text or ""
    return text if len(text) <= _TEXT_MAX else text[: _TEXT_MAX - 1] + "…"


def _items(reply: object) -> list[dict[str, Any]]:
    """The items of a custom-object list; anything malformed is skipped."""
    if not isinstance(reply, dict):
        raise ClusterError("kubernetes: metrics API: malformed reply (not an object)")
    return [i for i in _list(reply.get("items")) if isinstance(i, dict)]


def _list(value: object) -> Iterable[Any]:
    return value if isinstance(value, list) else []


def _name(item: Mapping[str, Any]) -> str:
    meta = item.get("metadata")
    return str(meta.get("name", "?")) if isinstance(meta, dict) else "?"


def _usage(cpu: Decimal, memory: Decimal) -> dict[str, int]:
    return {"cpu_millicores": int(cpu * 1000), "memory_mib": int(memory / 2**20)}
