"""A small Kubernetes API server for tests, on 127.0.0.1.

It stores objects as the real API serves them (plain JSON dicts with
``metadata``), answers list and get for the core, apps, autoscaling/v2,
keda.sh and metrics.k8s.io paths, honours namespaces, label selectors and
simple field selectors, applies merge and strategic-merge patches (and JSON
patches) the way the API server does for maps, and records every request.

Tests drive it with the real ``kubernetes`` client through a kubeconfig file
written by :meth:`FakeKubeAPI.write_kubeconfig`. Refusals (401, 403, 404, 503)
and hangs can be switched on per resource to exercise error handling.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

Obj = dict[str, Any]

#: API group/version prefix -> plurals served there, with their list kind.
_KINDS: dict[tuple[str, str], str] = {
    ("v1", "pods"): "Pod",
    ("v1", "nodes"): "Node",
    ("v1", "events"): "Event",
    ("v1", "services"): "Service",
    ("v1", "endpoints"): "Endpoints",
    ("apps/v1", "deployments"): "Deployment",
    ("autoscaling/v2", "horizontalpodautoscalers"): "HorizontalPodAutoscaler",
    ("keda.sh/v1alpha1", "scaledobjects"): "ScaledObject",
    ("metrics.k8s.io/v1beta1", "pods"): "PodMetrics",
    ("metrics.k8s.io/v1beta1", "nodes"): "NodeMetrics",
}
_CLUSTER_SCOPED = {("v1", "nodes"), ("metrics.k8s.io/v1beta1", "nodes")}
_CUSTOM_GROUPS = ("keda.sh/", "metrics.k8s.io/")

_PATH_RE = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+/[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)"
    r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$"
)


@dataclass(frozen=True)
class Request:
    """One request as the fake received it."""

    method: str
    path: str
    query: str
    content_type: str
    authorization: str
    body: Any = None


@dataclass
class _Rule:
    status: int
    hang: float = 0.0
    methods: frozenset[str] = frozenset()


@dataclass
class FakeKubeAPI:
    """The fake server's state; start() serves it on an ephemeral port."""

    token: str = "fake-bearer-token-0123456789"
    objects: dict[tuple[str, str], list[Obj]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    rules: dict[str, _Rule] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _release: threading.Event = field(default_factory=threading.Event)

    # Serving -----------------------------------------------------------------

    def start(self) -> FakeKubeAPI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_PATCH(self) -> None:
                fake._handle(self, "PATCH")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def do_PUT(self) -> None:
                fake._handle(self, "PUT")

            def do_DELETE(self) -> None:
                fake._handle(self, "DELETE")

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-kube-api",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake Kubernetes API is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def write_kubeconfig(
        self, path: Path, *, context: str = "fake", namespace: str = "cortex"
    ) -> Path:
        """A kubeconfig whose current context points at this server."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake-cluster", "cluster": {"server": self.url}}],
            "users": [{"name": "fake-user", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": context,
                    "context": {
                        "cluster": "fake-cluster",
                        "user": "fake-user",
                        "namespace": namespace,
                    },
                }
            ],
            "current-context": context,
        }
        path.write_text(json.dumps(config))
        return path

    # What tests arrange -------------------------------------------------------

    def add(self, api: str, plural: str, obj: Obj) -> Obj:
        with self._lock:
            self.objects.setdefault((api, plural), []).append(obj)
        return obj

    def refuse(self, resource: str, status: int, *methods: str) -> None:
        """Answer ``status`` for ``resource`` (a plural, ``plural/sub`` or
        ``group/version``), for the given methods or all of them."""
        self.rules[resource] = _Rule(status, methods=frozenset(methods))

    def hang(self, resource: str, seconds: float = 30.0) -> None:
        self.rules[resource] = _Rule(200, hang=seconds)

    def clear_rules(self) -> None:
        self.rules.clear()

    def get(self, api: str, plural: str, namespace: str | None, name: str) -> Obj:
        for obj in self.objects.get((api, plural), []):
            meta = obj["metadata"]
            if meta["name"] == name and meta.get("namespace") == namespace:
                return obj
        raise KeyError(f"{api} {plural} {namespace}/{name}")

    def methods(self) -> set[str]:
        return {r.method for r in self.requests}

    def paths(self, method: str | None = None) -> list[str]:
        return [r.path for r in self.requests if method in (None, r.method)]

    # Handling -----------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        req = Request(
            method,
            url.path,
            url.query,
            h.headers.get("Content-Type", ""),
            h.headers.get("Authorization", ""),
            body,
        )
        with self._lock:
            self.requests.append(req)
        status, payload = self._route(req)
        data = json.dumps(payload).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            return

    def _route(self, req: Request) -> tuple[int, Obj]:
        if req.authorization != f"Bearer {self.token}":
            return _status(401, "Unauthorized", "Unauthorized")
        m = _PATH_RE.match(req.path)
        if m is None:
            return _status(404, "NotFound", f"the server could not find {req.path}")
        api = m["core"] or m["group"]
        plural, name, sub, ns = m["plural"], m["name"], m["sub"], m["ns"]
        resource = f"{plural}/{sub}" if sub else plural
        for key in (resource, plural, api, "*"):
            rule = self.rules.get(key)
            if rule is None or (rule.methods and req.method not in rule.methods):
                continue
            if rule.hang:
                self._release.wait(rule.hang)
            if rule.status != 200:
                return _refusal(rule.status, req.method, resource, ns)
            break
        if (api, plural) not in _KINDS:
            return _status(404, "NotFound", f"the server could not find {req.path}")
        if (api, plural) in _CLUSTER_SCOPED and ns is not None:
            return _status(404, "NotFound", f"{plural} are not namespaced")
        if req.method == "GET" and name is None:
            return 200, self._list(api, plural, ns, parse_qs(req.query))
        if name is None:
            return _status(405, "MethodNotAllowed", f"{req.method} on a list")
        with self._lock:
            try:
                obj = self.get(api, plural, ns, name)
            except KeyError:
                kind = _KINDS[(api, plural)].lower()
                return _status(404, "NotFound", f'{kind}s "{name}" not found')
            if req.method == "GET":
                return 200, _scale_of(obj) if sub == "scale" else copy.deepcopy(obj)
            if req.method != "PATCH":
                return _status(405, "MethodNotAllowed", f"{req.method} not served")
            if api.startswith(_CUSTOM_GROUPS) and "strategic" in req.content_type:
                return _status(
                    415,
                    "UnsupportedMediaType",
                    "strategic merge patch is not supported for custom resources",
                )
            if sub == "scale":
                patch = _apply_patch(_scale_of(obj), req.body, req.content_type)
                replicas = int(patch["spec"]["replicas"])
                obj["spec"]["replicas"] = replicas
                return 200, _scale_of(obj)
            patched = _apply_patch(obj, req.body, req.content_type)
            obj.clear()
            obj.update(patched)
            return 200, copy.deepcopy(obj)

    def _list(
        self, api: str, plural: str, ns: str | None, query: dict[str, list[str]]
    ) -> Obj:
        selector = query.get("labelSelector", [""])[0]
        fields = query.get("fieldSelector", [""])[0]
        with self._lock:
            items = [
                copy.deepcopy(o)
                for o in self.objects.get((api, plural), [])
                if (ns is None or o["metadata"].get("namespace") == ns)
                and _labels_match(o["metadata"].get("labels") or {}, selector)
                and _fields_match(o, fields)
            ]
        kind = _KINDS[(api, plural)]
        return {
            "kind": f"{kind}List",
            "apiVersion": api,
            "metadata": {"resourceVersion": "1"},
            "items": items,
        }


def _status(code: int, reason: str, message: str) -> tuple[int, Obj]:
    return code, {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _refusal(code: int, method: str, resource: str, ns: str | None) -> tuple[int, Obj]:
    verb = {"GET": "list", "PATCH": "patch"}.get(method, method.lower())
    where = f' in the namespace "{ns}"' if ns else " at the cluster scope"
    reasons = {
        401: ("Unauthorized", "Unauthorized"),
        403: (
            "Forbidden",
            f'{resource} is forbidden: User "system:serviceaccount:cortex:test" '
            f'cannot {verb} resource "{resource}"{where}',
        ),
        404: ("NotFound", "the server could not find the requested resource"),
        503: ("ServiceUnavailable", "the server is currently unable to handle it"),
    }
    reason, message = reasons.get(code, ("Unknown", f"status {code}"))
    return _status(code, reason, message)


def _scale_of(deployment: Obj) -> Obj:
    meta = deployment["metadata"]
    labels = deployment["spec"]["selector"]["matchLabels"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": meta["name"], "namespace": meta.get("namespace")},
        "spec": {"replicas": deployment["spec"].get("replicas", 1)},
        "status": {
            "replicas": deployment.get("status", {}).get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in labels.items()),
        },
    }


def _apply_patch(obj: Obj, patch: Any, content_type: str) -> Obj:
    if "json-patch" in content_type:
        out = copy.deepcopy(obj)
        for op in patch:
            parts = [
                p.replace("~1", "/").replace("~0", "~")
                for p in op["path"][1:].split("/")
            ]
            parent = out
            for part in parts[:-1]:
                parent = parent.setdefault(part, {})
            if op["op"] in ("add", "replace"):
                parent[parts[-1]] = op["value"]
            elif op["op"] == "remove":
                parent.pop(parts[-1], None)
        return out
    return _merge(obj, patch)


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def _labels_match(labels: dict[str, str], selector: str) -> bool:
    for term in _split_terms(selector):
        term = term.strip()
        if not term:
            continue
        if m := re.fullmatch(r"(\S+)\s+(in|notin)\s+\((.*)\)", term):
            values = {v.strip() for v in m[3].split(",")}
            has = labels.get(m[1]) in values
            if has != (m[2] == "in"):
                return False
        elif "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _split_terms(selector: str) -> Iterator[str]:
    depth, start = 0, 0
    for i, ch in enumerate(selector):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            yield selector[start:i]
            start = i + 1
    yield selector[start:]


def _fields_match(obj: Obj, selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        negate = "!=" in term
        path, value = term.split("!=" if negate else "=", 1)
        current: Any = obj
        for part in path.split("."):
            current = current.get(part) if isinstance(current, dict) else None
        if (str(current) == value) == negate:
            return False
    return True


# Objects as the API serves them ------------------------------------------------

WORKER_LABELS = {"app.kubernetes.io/name": "cortex-worker"}


def _iso(seconds_ago: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - seconds_ago))


def pod(
    name: str,
    *,
    namespace: str = "cortex",
    labels: dict[str, str] | None = None,
    phase: str = "Running",
    ready: bool = True,
    restarts: int = 0,
    node: str = "node-a",
    age: float = 600.0,
) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(WORKER_LABELS if labels is None else labels),
            "creationTimestamp": _iso(age),
            "uid": f"uid-{name}",
        },
        "spec": {"nodeName": node, "containers": [{"name": "worker", "image": "x"}]},
        "status": {
            "phase": phase,
            "startTime": _iso(age),
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [
                {
                    "name": "worker",
                    "ready": ready,
                    "restartCount": restarts,
                    "image": "x",
                    "imageID": "",
                }
            ],
        },
    }


def node(name: str, *, ready: bool = True, pressure: str | None = None) -> Obj:
    conditions = [
        {
            "type": "Ready",
            "status": "True" if ready else "False",
            "reason": "KubeletReady" if ready else "KubeletNotReady",
            "message": "kubelet is posting ready status" if ready else "PLEG",
            "lastTransitionTime": _iso(3600),
        }
    ]
    for kind in ("MemoryPressure", "DiskPressure", "PIDPressure"):
        conditions.append(
            {
                "type": kind,
                "status": "True" if kind == pressure else "False",
                "reason": kind if kind == pressure else f"KubeletHasNo{kind}",
                "message": "",
                "lastTransitionTime": _iso(3600),
            }
        )
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {}, "creationTimestamp": _iso(86400)},
        "status": {
            "conditions": conditions,
            "allocatable": {"cpu": "2", "memory": "4Gi"},
        },
    }


def event(
    name: str,
    *,
    namespace: str = "cortex",
    type_: str = "Warning",
    reason: str = "BackOff",
    message: str = "Back-off restarting failed container",
    obj: str = "pod/web-1",
    count: int = 1,
    ago: float = 60.0,
) -> Obj:
    kind, _, obj_name = obj.partition("/")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": {"kind": kind.capitalize(), "name": obj_name},
        "reason": reason,
        "message": message,
        "type": type_,
        "count": count,
        "lastTimestamp": _iso(ago),
        "firstTimestamp": _iso(ago + 60),
    }


def service(name: str, *, namespace: str = "cortex", port: int = 80) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "10.0.0.10",
            "ports": [{"port": port, "protocol": "TCP"}],
        },
    }


def endpoints(
    name: str, *, namespace: str = "cortex", ready: int = 1, not_ready: int = 0
) -> Obj:
    subset: Obj = {"ports": [{"port": 80}]}
    if ready:
        subset["addresses"] = [{"ip": f"10.1.0.{i}"} for i in range(ready)]
    if not_ready:
        subset["notReadyAddresses"] = [{"ip": f"10.2.0.{i}"} for i in range(not_ready)]
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name, "namespace": namespace},
        "subsets": [subset],
    }


def deployment(
    name: str = "cortex-worker",
    *,
    namespace: str = "cortex",
    replicas: int = 2,
    ready: int = 2,
    labels: dict[str, str] | None = None,
) -> Obj:
    match = dict(WORKER_LABELS if labels is None else labels)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": match},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": match},
            "template": {
                "metadata": {"labels": match},
                "spec": {"containers": [{"name": "worker", "image": "x"}]},
            },
        },
        "status": {
            "replicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "updatedReplicas": replicas,
        },
    }


def hpa(
    name: str = "cortex-worker",
    *,
    namespace: str = "cortex",
    target: str = "cortex-worker",
    min_replicas: int = 1,
    max_replicas: int = 10,
) -> Obj:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": target,
            },
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
        },
    }


def scaled_object(
    name: str = "cortex-worker",
    *,
    namespace: str = "cortex",
    target: str = "cortex-worker",
    min_replicas: int = 1,
    max_replicas: int = 8,
    paused: int | None = None,
) -> Obj:
    annotations = {}
    if paused is not None:
        annotations["autoscaling.keda.sh/paused-replicas"] = str(paused)
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {
            "scaleTargetRef": {"name": target},
            "minReplicaCount": min_replicas,
            "maxReplicaCount": max_replicas,
            "triggers": [{"type": "redis", "metadata": {"listName": "x"}}],
        },
    }


def pod_metrics(
    name: str, *, namespace: str = "cortex", cpu: str = "250m", memory: str = "64Mi"
) -> Obj:
    return {
        "apiVersion": "metrics.k8s.io/v1beta1",
        "kind": "PodMetrics",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(WORKER_LABELS),
        },
        "timestamp": _iso(5),
        "window": "15s",
        "containers": [{"name": "worker", "usage": {"cpu": cpu, "memory": memory}}],
    }


def node_metrics(name: str, *, cpu: str = "1200m", memory: str = "2Gi") -> Obj:
    return {
        "apiVersion": "metrics.k8s.io/v1beta1",
        "kind": "NodeMetrics",
        "metadata": {"name": name, "labels": {}},
        "timestamp": _iso(5),
        "window": "15s",
        "usage": {"cpu": cpu, "memory": memory},
    }
