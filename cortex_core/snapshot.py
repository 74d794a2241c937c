"""What the console draws: one immutable picture of the system per refresh,
and the operator actions it can send back (:class:`Control`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cortex_core.models import Priority


@dataclass(frozen=True)
class Header:
    """What the console header shows about the target."""

    mode: str
    """``embedded`` or ``cluster``."""
    redis: str
    """The Redis target, never with its password."""
    namespace: str
    simulated: bool
    token_limit: int
    """Tokens per minute, input plus output; 0 means unlimited."""
    backend: str
    """Who runs the workers: ``local`` or ``kubernetes``."""
    desired_workers: int | None = None
    kube_context: str | None = None
    """Cluster mode: the kubeconfig context (``in-cluster`` inside a pod)."""
    kube_namespace: str | None = None
    """Cluster mode: the namespace of the worker Deployment."""
    autoscaler: str | None = None
    """Cluster mode: who else owns the worker count, and its pin if any."""
    pinned: int | None = None
    """The count a manual scale pinned the autoscaler at, until released."""


@dataclass(frozen=True)
class QueueDepths:
    pending: Mapping[Priority, int]
    in_flight: int
    dead: int
    paused: frozenset[str] = frozenset()
    """``all`` or priority names whose consumption is paused."""

    @property
    def total_pending(self) -> int:
        return sum(self.pending.values())


@dataclass(frozen=True)
class WorkerRow:
    """One worker process (or pod) with what its heartbeat says."""

    name: str
    state: str
    """``running``, ``draining``, ``starting``, ``exited`` or ``missing``."""
    host: str = ""
    pid: int | None = None
    cpu_percent: float | None = None
    rss_bytes: int | None = None
    current: tuple[str, ...] = ()
    """Ids of the tasks it runs now."""
    done: int = 0
    failed: int = 0
    tokens: int = 0
    started_at: float | None = None
    node: str = ""
    """Cluster mode: the node the pod runs on."""
    restarts: int | None = None
    """Cluster mode: container restarts of the pod."""


@dataclass(frozen=True)
class LogEntry:
    """One task event, as the console's log shows it."""

    at: float
    kind: str
    """enqueued, claimed, done, retry, dead, expired, handed_back, requeued."""
    task_id: str
    priority: str = ""
    category: str = ""
    worker: str = ""
    detail: str = ""
    event_id: str = ""


@dataclass(frozen=True)
class TokenSeries:
    """Tokens per minute sampled once per bucket, oldest first."""

    bucket_seconds: int
    ends_at: float
    tokens_per_minute: Sequence[int]
    limit: int


@dataclass(frozen=True)
class Snapshot:
    taken_at: float
    header: Header
    queues: QueueDepths
    workers: Sequence[WorkerRow]
    tokens: TokenSeries
    log: Sequence[LogEntry]
    """Newest first."""
    error: str | None = None
    """Set when Redis could not be read; the rest is the last good picture."""
    notices: Sequence[str] = field(default_factory=tuple)


class Control(Protocol):
    """The console's only way into the system."""

    @property
    def header(self) -> Header: ...

    async def snapshot(self, log_limit: int = 200) -> Snapshot: ...

    async def enqueue(
        self, query: str, category: str, priority: Priority, count: int = 1
    ) -> list[str]:
        """Validate and enqueue ``count`` tasks; return their ids."""
        ...

    async def requeue(self, task_id: str) -> None:
        """Return a dead task to its queue; raise UnknownTask or
        InvalidTransition with a message fit for the operator."""
        ...

    async def scale(self, delta: int) -> int:
        """Change the worker count by ``delta``; return the new desired count."""
        ...

    async def release_pin(self) -> str:
        """Hand the worker count back to the autoscaler; say what now owns it.
        Raise BackendError when nothing is pinned."""
        ...

    async def close(self) -> None: ...
