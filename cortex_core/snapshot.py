"""What the console draws: one immutable picture of the system per refresh,
and the operator actions it can send back (:class:`Control`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cortex_core.apistatus import ApiStatus
from cortex_core.models import PRIORITIES, Priority, TaskResult
from cortex_core.printable import printable_fields


@dataclass(frozen=True)
@printable_fields
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
@printable_fields
class QueueDepths:
    pending: Mapping[Priority, int]
    in_flight: int
    dead: int
    paused: frozenset[str] = frozenset()
    """``all``, ``drain`` or priority names whose consumption is paused."""
    oldest: Mapping[Priority, float] = field(default_factory=dict)
    """Seconds the task at the head of each non-empty level has waited."""

    @property
    def total_pending(self) -> int:
        return sum(self.pending.values())


@dataclass(frozen=True)
@printable_fields
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
@printable_fields
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
@printable_fields
class TokenSeries:
    """Tokens per minute sampled once per bucket, oldest first."""

    bucket_seconds: int
    ends_at: float
    tokens_per_minute: Sequence[int]
    limit: int
    input_per_minute: Sequence[int] = ()
    """Input tokens per minute (as the API counts them), same buckets."""
    output_per_minute: Sequence[int] = ()
    input_limit: int = 0
    """Input tokens per minute allowed (configured or reported); 0: none."""
    output_limit: int = 0


@dataclass(frozen=True)
@printable_fields
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
    alerts: Sequence[str] = field(default_factory=tuple)
    """What needs the operator's attention now, most urgent first."""
    api: ApiStatus | None = None
    """The model API and the shared budget; None when it could not be read."""


STATES = ("pending", "running", "done", "dead")
"""Task states a filter can name, in the order the tasks view lists them."""
FILTER_TERMS = ("priority", "status", "category")
"""The ``name:value`` terms a filter understands."""


@dataclass(frozen=True)
@printable_fields
class TaskFilter:
    """What a list shows: ``priority:``, ``status:``, ``category:`` terms
    (each may repeat or list values with commas) and free text that must
    appear in the id, query, worker or reason."""

    text: str = ""
    priorities: frozenset[str] = frozenset()
    states: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str) -> TaskFilter:
        """Read a filter line; raise ValueError naming an unknown term or value."""
        words: list[str] = []
        terms: dict[str, set[str]] = {name: set() for name in FILTER_TERMS}
        for word in text.split():
            name, sep, value = word.partition(":")
            if not sep or name.lower() not in terms:
                if sep and name.isalpha() and value:
                    known = ", ".join(f"{t}:" for t in FILTER_TERMS)
                    raise ValueError(f"unknown filter term {name}: (use {known})")
                words.append(word)
                continue
            values = {v for v in value.lower().split(",") if v}
            if not values:
                raise ValueError(f"{name}: needs a value")
            terms[name.lower()] |= values
        for name, allowed in (
            ("priority", {str(p) for p in PRIORITIES}),
            ("status", set(STATES)),
        ):
            unknown = terms[name] - allowed
            if unknown:
                raise ValueError(
                    f"{name}: {', '.join(sorted(unknown))} is not one of "
                    f"{', '.join(sorted(allowed))}"
                )
        return cls(
            text=" ".join(words),
            priorities=frozenset(terms["priority"]),
            states=frozenset(terms["status"]),
            categories=frozenset(terms["category"]),
        )

    @property
    def empty(self) -> bool:
        return not (self.text or self.priorities or self.states or self.categories)

    def matches(self, row: TaskRow) -> bool:
        if self.priorities and row.priority not in self.priorities:
            return False
        if self.states and row.state not in self.states:
            return False
        if self.categories and row.category not in self.categories:
            return False
        if self.text:
            haystack = " ".join((row.task_id, row.query, row.worker, row.reason))
            return all(w in haystack.lower() for w in self.text.lower().split())
        return True


@dataclass(frozen=True)
@printable_fields
class TaskRow:
    """One task as a list shows it."""

    task_id: str
    state: str
    priority: str
    category: str
    attempts: int = 0
    max_attempts: int = 0
    worker: str = ""
    reason: str = ""
    """Why it is dead, or why its last attempt failed."""
    query: str = ""
    """The start of the query, on one line."""
    enqueued_at: float | None = None
    finished_at: float | None = None


@dataclass(frozen=True)
@printable_fields
class TaskPage:
    """A window of a list: the rows that matched among those read."""

    rows: Sequence[TaskRow]
    offset: int
    """Position in the list of the first task read."""
    scanned: int
    """Tasks read for this page; the next page starts at offset + scanned."""
    total: int
    """Tasks in the list; see ``exact`` for what the filter did to it."""
    exact: bool = True
    """True when ``total`` counts only tasks the filter matches. Free text,
    categories, and priorities of running or dead tasks are not indexed:
    then ``total`` is the length of the list the filter was applied to."""


@dataclass(frozen=True)
@printable_fields
class HistoryEntry:
    """One change of a task's state."""

    at: float
    kind: str
    worker: str = ""
    attempt: int = 0
    detail: str = ""


@dataclass(frozen=True)
@printable_fields
class TaskDetail:
    """Everything the console shows about one task."""

    row: TaskRow
    query: str
    history: Sequence[HistoryEntry]
    """Oldest first, from the event stream (which keeps the recent past)."""
    result: TaskResult | None = None
    audit_files: Sequence[str] = ()
    """Journal segments that hold the task's audit records."""
    problem: str = ""
    """Why part of the record could not be read, if it could not."""


@dataclass(frozen=True)
@printable_fields
class ScaleInfo:
    """Who decides the worker count and what it is."""

    current: int
    """Workers running now."""
    desired: int | None
    owner: str
    """``nothing``, ``local supervisor`` or ``autoscaler``, with detail."""
    can_scale: bool
    maximum: int = 0
    """The largest count the backend accepts; 0 where nothing can scale."""


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

    async def scale_to(self, count: int) -> int:
        """Set the desired worker count; return it."""
        ...

    async def scale_info(self) -> ScaleInfo: ...

    async def tasks(
        self, view: str, task_filter: TaskFilter, offset: int = 0, limit: int = 200
    ) -> TaskPage:
        """A page of the ``tasks`` or ``dead`` list; a bounded number of
        Redis round trips whatever the backlog."""
        ...

    async def task_detail(self, task_id: str) -> TaskDetail: ...

    async def requeue_dead(self, task_filter: TaskFilter) -> int:
        """Requeue every dead task the filter matches; return how many."""
        ...

    async def delete_dead(self, task_id: str) -> None: ...

    async def cancel(self, task_id: str) -> None:
        """Dead-letter a pending task with the reason ``cancelled``."""
        ...

    async def pause(self, priority: Priority | None = None) -> None: ...

    async def resume(self, priority: Priority | None = None) -> None:
        """Resume one priority, or (None) everything including a drain."""
        ...

    async def drain(self) -> None:
        """Stop claiming everywhere; running tasks finish."""
        ...

    async def close(self) -> None: ...
