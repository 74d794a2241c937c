"""A ``Control`` with fixed data that records what the console asks of it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Any

from textual.app import App
from textual.pilot import Pilot
from textual.widgets import Input

from cortex_core.errors import TaskValidationError, UnknownTask
from cortex_core.models import Priority, TaskResult
from cortex_core.snapshot import (
    Header,
    HistoryEntry,
    LogEntry,
    QueueDepths,
    ScaleInfo,
    Snapshot,
    TaskDetail,
    TaskFilter,
    TaskPage,
    TaskRow,
    TokenSeries,
    WorkerRow,
)
from cortex_tui.screens.dashboard import DashboardScreen

NOW = 1_748_779_200.0
"""2025-06-01 12:00:00 UTC: when the fixed snapshot was taken."""

HEADER = Header(
    mode="embedded",
    redis="redis://127.0.0.1:6390/0",
    namespace="cortex",
    simulated=True,
    token_limit=40_000,
    backend="local",
    desired_workers=3,
)

WORKERS = (
    WorkerRow(
        name="worker-1",
        state="running",
        host="box",
        pid=4101,
        cpu_percent=12.5,
        rss_bytes=88 * 1_048_576,
        current=("0196a1b2c3d4e5f6a7b8c9d0", "0196a1b2c3d4e5f6a7b8c9d1"),
        done=42,
        failed=1,
        tokens=51_200,
        started_at=NOW - 3600,
    ),
    WorkerRow(
        name="worker-2",
        state="draining",
        host="box",
        pid=4102,
        cpu_percent=3.0,
        rss_bytes=91 * 1_048_576,
        current=("0196a1b2c3d4e5f6a7b8c9d2",),
        done=40,
        failed=0,
        tokens=49_000,
        started_at=NOW - 3600,
    ),
    WorkerRow(name="cortex-worker-7d9f8b6c5-x2k4p", state="missing", done=7),
)

DEAD_TASK = "0196a1b2c3d4e5f6a7b8c9d3"
DONE_TASK = "0196a1b2c3d4e5f6a7b8c9d4"

LOG = (
    LogEntry(
        at=NOW - 2,
        kind="dead",
        task_id=DEAD_TASK,
        priority="high",
        category="security",
        worker="worker-1",
        detail="3 attempts: kubectl timed out [exit 124]",
        event_id="1748779198000-0",
    ),
    LogEntry(
        at=NOW - 5,
        kind="done",
        task_id=DONE_TASK,
        priority="medium",
        category="inventory",
        worker="worker-2",
        detail="412 tokens in 3.8s",
        event_id="1748779195000-0",
    ),
    LogEntry(
        at=NOW - 9,
        kind="claimed",
        task_id="0196a1b2c3d4e5f6a7b8c9d2",
        priority="critical",
        category="infrastructure",
        worker="worker-2",
        event_id="1748779191000-0",
    ),
    LogEntry(
        at=NOW - 61,
        kind="enqueued",
        task_id="0196a1b2c3d4e5f6a7b8c9d0",
        priority="low",
        category="cicd",
        event_id="1748779139000-0",
    ),
)

TOKENS_PER_MINUTE = (
    4_000, 9_500, 16_000, 22_000, 31_000, 38_500, 41_000, 36_000,
    29_000, 33_000, 27_500, 24_000, 30_500, 35_000, 21_000,
)  # fmt: skip
"""Fifteen minutes that climb past the limit once and fall back."""

TOKENS = TokenSeries(
    bucket_seconds=60, ends_at=NOW, tokens_per_minute=TOKENS_PER_MINUTE, limit=40_000
)

SNAPSHOT = Snapshot(
    taken_at=NOW,
    header=HEADER,
    queues=QueueDepths(
        pending={
            Priority.CRITICAL: 2,
            Priority.HIGH: 5,
            Priority.MEDIUM: 1_250,
            Priority.LOW: 0,
        },
        in_flight=3,
        dead=1,
        paused=frozenset({"low"}),
        oldest={Priority.CRITICAL: 12.0, Priority.HIGH: 95.0, Priority.MEDIUM: 7_500.0},
    ),
    workers=WORKERS,
    tokens=TOKENS,
    log=LOG,
    alerts=("1 worker missing heartbeats", "medium waiting 2h05m"),
)

QUERY = (
    "Analyze cluster health for the security domain. Check pod status, "
    "resource usage, and service availability."
)
PENDING_TASK = "0196a1b2c3d4e5f6a7b8c9d5"

TASKS = (
    TaskRow(
        task_id="0196a1b2c3d4e5f6a7b8c9d2",
        state="running",
        priority="critical",
        category="infrastructure",
        attempts=1,
        max_attempts=3,
        worker="worker-2",
        query=QUERY,
        enqueued_at=NOW - 20,
    ),
    TaskRow(
        task_id=PENDING_TASK,
        state="pending",
        priority="high",
        category="development",
        max_attempts=3,
        query="List the deployments whose rollout is stuck.",
        enqueued_at=NOW - 95,
    ),
    TaskRow(
        task_id="0196a1b2c3d4e5f6a7b8c9d0",
        state="pending",
        priority="low",
        category="cicd",
        max_attempts=3,
        query="Which pipelines failed in the last hour, and why?",
        enqueued_at=NOW - 61,
    ),
    TaskRow(
        task_id=DEAD_TASK,
        state="dead",
        priority="high",
        category="security",
        attempts=3,
        max_attempts=3,
        worker="worker-1",
        reason="3 attempts: kubectl timed out [exit 124]",
        query=QUERY,
        enqueued_at=NOW - 300,
        finished_at=NOW - 2,
    ),
    TaskRow(
        task_id=DONE_TASK,
        state="done",
        priority="medium",
        category="inventory",
        attempts=1,
        max_attempts=3,
        worker="worker-2",
        query="Count the nodes per instance type.",
        enqueued_at=NOW - 40,
        finished_at=NOW - 5,
    ),
)

DETAIL = TaskDetail(
    row=TASKS[3],
    query=QUERY,
    history=(
        HistoryEntry(NOW - 300, "enqueued"),
        HistoryEntry(NOW - 290, "claimed", "worker-1", 1),
        HistoryEntry(NOW - 200, "retry", "worker-1", 1, "kubectl timed out"),
        HistoryEntry(NOW - 190, "claimed", "worker-1", 2),
        HistoryEntry(NOW - 100, "retry", "worker-1", 2, "kubectl timed out"),
        HistoryEntry(NOW - 90, "claimed", "worker-1", 3),
        HistoryEntry(NOW - 2, "dead", "worker-1", 3, "kubectl timed out [exit 124]"),
    ),
    result=TaskResult(
        task_id=DEAD_TASK,
        ok=False,
        output="\n".join(f"line {n}: pod web-{n} Running" for n in range(1, 61)),
        error="kubectl timed out [exit 124]",
        model="simulated-sonnet",
        simulated=True,
        input_tokens=1_840,
        output_tokens=312,
        worker="worker-1",
        attempt=3,
        started_at=NOW - 90,
        finished_at=NOW - 2,
    ),
    audit_files=("/var/lib/cortex/audit/2025-06-01/journal-0003.jsonl",),
)


@dataclass
class FixedControl:
    """Serves ``snapshot`` (or raises ``failure``) and records every call.

    ``requeue_error`` and ``enqueue_error`` make those calls raise; ``desired``
    is the worker count ``scale`` moves and reports. A ``*_gate`` event, when
    set up, holds that call's answer back until the test sets it.
    """

    snapshot_data: Snapshot = SNAPSHOT
    failure: BaseException | None = None
    requeue_error: BaseException | None = None
    enqueue_error: BaseException | None = None
    desired: int | None = 3
    scale_gate: asyncio.Event | None = None
    snapshot_gate: asyncio.Event | None = None
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    closed: bool = False
    task_rows: tuple[TaskRow, ...] = TASKS
    change_error: BaseException | None = None
    """Raised by every other change (cancel, pause, delete...)."""

    @property
    def header(self) -> Header:
        return replace(self.snapshot_data.header, desired_workers=self.desired)

    def calls_to(self, name: str) -> list[tuple[Any, ...]]:
        """The arguments of every call to ``name``, oldest first."""
        return [args for called, args in self.calls if called == name]

    async def snapshot(self, log_limit: int = 200) -> Snapshot:
        self.calls.append(("snapshot", (log_limit,)))
        if self.snapshot_gate is not None:
            await self.snapshot_gate.wait()
        if self.failure is not None:
            raise self.failure
        # Like the real control, hand out only the newest log_limit entries.
        log = self.snapshot_data.log[:log_limit]
        return replace(self.snapshot_data, header=self.header, log=log)

    async def enqueue(
        self, query: str, category: str, priority: Priority, count: int = 1
    ) -> list[str]:
        self.calls.append(("enqueue", (query, category, priority, count)))
        if self.enqueue_error is not None:
            raise self.enqueue_error
        if not query.strip():
            raise TaskValidationError("query: must not be empty")
        return [f"{'a' * 16}{n:08x}" for n in range(1, count + 1)]

    async def requeue(self, task_id: str) -> None:
        self.calls.append(("requeue", (task_id,)))
        if self.requeue_error is not None:
            raise self.requeue_error

    async def scale(self, delta: int) -> int:
        self.calls.append(("scale", (delta,)))
        if self.scale_gate is not None:
            await self.scale_gate.wait()
        self.desired = max(0, (self.desired or 0) + delta)
        return self.desired

    async def scale_to(self, count: int) -> int:
        self.calls.append(("scale_to", (count,)))
        self._check()
        self.desired = count
        return count

    async def scale_info(self) -> ScaleInfo:
        self.calls.append(("scale_info", ()))
        return ScaleInfo(
            current=2,
            desired=self.desired,
            owner="local supervisor",
            can_scale=True,
            maximum=64,
        )

    async def tasks(
        self, view: str, task_filter: TaskFilter, offset: int = 0, limit: int = 200
    ) -> TaskPage:
        self.calls.append(("tasks", (view, task_filter, offset, limit)))
        rows = [
            r
            for r in self.task_rows
            if (view == "tasks" or r.state == "dead")
            and (not task_filter.states or r.state in task_filter.states)
            and (not task_filter.priorities or r.priority in task_filter.priorities)
        ]
        window = rows[offset : offset + limit]
        return TaskPage(
            rows=[r for r in window if task_filter.matches(r)],
            offset=offset,
            scanned=len(window),
            total=len(rows),
            exact=not (task_filter.text or task_filter.categories),
        )

    async def task_detail(self, task_id: str) -> TaskDetail:
        self.calls.append(("task_detail", (task_id,)))
        for row in self.task_rows:
            if row.task_id == task_id:
                return replace(DETAIL, row=row) if row.task_id != DEAD_TASK else DETAIL
        raise UnknownTask(f"no task with id {task_id!r}")

    async def requeue_dead(self, task_filter: TaskFilter) -> int:
        self.calls.append(("requeue_dead", (task_filter,)))
        self._check()
        return sum(r.state == "dead" and task_filter.matches(r) for r in self.task_rows)

    async def delete_dead(self, task_id: str) -> None:
        self.calls.append(("delete_dead", (task_id,)))
        self._check()

    async def cancel(self, task_id: str) -> None:
        self.calls.append(("cancel", (task_id,)))
        self._check()

    async def pause(self, priority: Priority | None = None) -> None:
        self.calls.append(("pause", (priority,)))
        self._check()

    async def resume(self, priority: Priority | None = None) -> None:
        self.calls.append(("resume", (priority,)))
        self._check()

    async def drain(self) -> None:
        self.calls.append(("drain", ()))
        self._check()

    def _check(self) -> None:
        if self.change_error is not None:
            raise self.change_error

    async def close(self) -> None:
        self.calls.append(("close", ()))
        self.closed = True


@dataclass(frozen=True)
class Note:
    """One notification the console showed."""

    message: str
    severity: str
    markup: bool


def record_notifications(app: App[Any]) -> list[Note]:
    """Record every ``app.notify`` call, then let Textual show it as usual."""
    notes: list[Note] = []
    original = app.notify

    def notify(message: str, **kwargs: Any) -> None:
        notes.append(
            Note(
                message=message,
                severity=kwargs.get("severity", "information"),
                markup=kwargs.get("markup", True),
            )
        )
        original(message, **kwargs)

    app.notify = notify  # type: ignore[method-assign]
    return notes


def dashboard(app: App[Any]) -> DashboardScreen:
    """The active screen, which must be the dashboard."""
    screen = app.screen
    assert isinstance(screen, DashboardScreen)
    return screen


async def settle(pilot: Pilot[Any]) -> None:
    """Wait until every worker is done and the messages they posted are handled."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def run_line(pilot: Pilot[Any], sign: str, text: str) -> None:
    """Open the command (``colon``) or filter (``slash``) line with its key,
    put ``text`` in it and press enter. Typing key by key is tested once;
    elsewhere it only costs time."""
    await pilot.press(sign)
    line = pilot.app.screen.query_one("#line", Input)
    line.value = text
    await pilot.press("enter")
    await settle(pilot)
