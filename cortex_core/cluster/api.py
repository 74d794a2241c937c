"""One connection to the Kubernetes API, and calls made off the event loop.

The ``kubernetes`` client is synchronous: every call runs in a thread with a
bounded timeout and no retries of its own, and every failure becomes a
:class:`ClusterError` whose message names the verb, the resource and the RBAC
that would allow it. The bearer token never appears in a message or a log.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.utils.quantity import parse_quantity

from cortex_core.errors import ClusterError

logger = logging.getLogger(__name__)

_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_REASONS = {
    401: "401 Unauthorized: the credentials were refused (expired token?)",
    403: "403 Forbidden",
    404: "404 Not Found",
    409: "409 Conflict",
    415: "415 Unsupported Media Type",
    422: "422 Invalid",
    429: "429 Too Many Requests",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}


@dataclass(frozen=True)
class Target:
    """Where the API calls go, as the console header shows it."""

    context: str
    namespace: str
    in_cluster: bool = False


@dataclass(frozen=True)
class Call:
    """What one API call does, in RBAC's words."""

    verb: str
    resource: str
    """Plural, with ``/subresource`` when there is one."""
    group: str = ""
    """API group; empty for the core group."""
    namespace: str | None = None
    name: str | None = None

    def describe(self) -> str:
        what = self.resource if not self.name else f"{self.resource} {self.name}"
        where = f" in namespace {self.namespace}" if self.namespace else ""
        return f"{self.verb} {what}{where}"

    def rbac(self) -> str:
        group = self.group or '""'
        scope = (
            f"a Role in namespace {self.namespace}"
            if self.namespace
            else "a ClusterRole"
        )
        return (
            f'RBAC needed: verb "{self.verb}" on "{self.resource}" '
            f"(apiGroup {group}) in {scope}"
        )


def describe_failure(call: Call, err: BaseException, timeout: float) -> ClusterError:
    """One line naming the call, what went wrong and what would fix it."""
    head = f"kubernetes: {call.describe()}"
    if isinstance(err, ApiException):
        status = int(err.status or 0)
        reason = _REASONS.get(status, f"{status} {err.reason or 'error'}")
        line = f"{head}: {reason}"
        if status == 403:
            line += f"; {call.rbac()}"
        elif status == 404 and call.group == "metrics.k8s.io":
            line += " (is metrics-server installed?)"
        return ClusterError(line, status)
    if isinstance(err, ValueError):
        return ClusterError(f"{head}: malformed reply ({_first_line(err)})")
    if isinstance(err, urllib3.exceptions.MaxRetryError) and err.reason is not None:
        err = err.reason
    if isinstance(err, urllib3.exceptions.TimeoutError | TimeoutError):
        return ClusterError(f"{head}: no answer within {timeout:g}s (timed out)")
    kind = type(err).__name__
    return ClusterError(f"{head}: cannot reach the API server ({kind})")


class ClusterAPI:
    """An API client bound to one context and namespace."""

    def __init__(
        self, api_client: client.ApiClient, target: Target, *, timeout: float
    ) -> None:
        self.api_client = api_client
        self.target = target
        self.timeout = timeout
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.autoscaling = client.AutoscalingV2Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    @classmethod
    def connect(
        cls,
        *,
        kubeconfig: Path | None = None,
        context: str | None = None,
        namespace: str | None = None,
        timeout: float = 10.0,
    ) -> ClusterAPI:
        """From a kubeconfig (flag, ``KUBECONFIG``, ``~/.kube/config``), or the
        pod's service account when running inside a cluster without one."""
        cfg = client.Configuration()
        # cortex bounds and retries calls itself; a hung server must cost one
        # timeout, not four.
        cfg.retries = 0
        try:
            if kubeconfig is None and _in_cluster():
                config.load_incluster_config(client_configuration=cfg)
                ns = namespace or _read_sa_namespace()
                target = Target("in-cluster", ns, in_cluster=True)
                api = client.ApiClient(cfg)
            else:
                path = str(kubeconfig) if kubeconfig is not None else None
                contexts, current = config.list_kube_config_contexts(path)
                chosen = _pick_context(contexts, current, context)
                ns = (
                    namespace
                    or chosen.get("context", {}).get("namespace")
                    or ("default")
                )
                api = config.new_client_from_config(
                    config_file=path,
                    context=chosen["name"],
                    persist_config=False,
                    client_configuration=cfg,
                )
                target = Target(chosen["name"], ns)
        except (ConfigException, OSError, ValueError, TypeError, KeyError) as err:
            raise ClusterError(f"kubeconfig: {err}") from err
        logger.info(
            "kubernetes: using context %s, namespace %s",
            target.context,
            target.namespace,
        )
        return cls(api, target, timeout=timeout)

    async def call(
        self, call: Call, fn: Callable[..., Any], *args: Any, **kw: Any
    ) -> Any:
        """Run one client method in a thread; failures raise ClusterError."""
        try:
            return await asyncio.to_thread(
                fn, *args, _request_timeout=self.timeout, **kw
            )
        except (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError) as err:
            failure = describe_failure(call, err, self.timeout)
            logger.debug("%s", failure)
            raise failure from err

    def close(self) -> None:
        self.api_client.close()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def _in_cluster() -> bool:
    if os.environ.get("KUBECONFIG"):
        return False
    if Path(os.path.expanduser(config.KUBE_CONFIG_DEFAULT_LOCATION)).exists():
        return False
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def _read_sa_namespace() -> str:
    try:
        return _SA_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def _pick_context(
    contexts: list[dict[str, Any]], current: dict[str, Any] | None, wanted: str | None
) -> dict[str, Any]:
    if wanted is None:
        if current is None:
            raise ClusterError("kubeconfig: no current context; pass --kube-context")
        return current
    for ctx in contexts:
        if ctx.get("name") == wanted:
            return ctx
    names = ", ".join(sorted(str(c.get("name")) for c in contexts)) or "none"
    raise ClusterError(f"kubeconfig: no context named {wanted!r} (have: {names})")


def quantity(value: object) -> Decimal | None:
    """A Kubernetes quantity (``250m``, ``64Mi``) as a number; None if malformed."""
    if not isinstance(value, str | int | float):
        return None
    try:
        parsed = parse_quantity(value)
    except (ValueError, InvalidOperation, TypeError):
        return None
    return Decimal(parsed)
