"""``cortex stress``: the reference workload end to end, with a report.

The run starts its worker processes first and waits until each has sent a
heartbeat, creates the tasks with consumption paused (so the initial depth is
the whole workload, as in the reference run), resumes, and waits for every
task to end. The figures come from what Redis recorded, not from the workers'
own counts: results for tokens and times, and the event stream, replayed in
order, for duplicates and priority inversions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from cortex_core.aio import raise_if_cancelled
from cortex_core.backends.local import LocalBackend
from cortex_core.config import Settings
from cortex_core.models import PRIORITIES, Priority, TaskResult
from cortex_core.queue import Event
from cortex_core.system import System
from cortex_core.workload import reference_tasks

logger = logging.getLogger(__name__)

#: The published run of the earlier system on the same workload.
REFERENCE = {
    "tasks": 50,
    "workers": 2,
    "creation_seconds": 1.0,
    "avg_task_seconds": "3 to 5",
    "tokens_per_task": "about 100 to 136",
    "token_limit": 40_000,
    "failed": 0,
    "tasks_per_minute": 30.0,
}

_ENTERS_QUEUE = {"enqueued", "retry", "expired", "handed_back", "requeued"}


@dataclass
class StressReport:
    tasks: int
    workers: int
    concurrency: int
    latency: tuple[float, float]
    simulated: bool
    creation_seconds: float
    initial_depth: int
    completed: int
    failed: int
    lost: int
    duplicates: int
    priority_inversions: int
    avg_task_seconds: float
    tokens_min: int
    tokens_mean: float
    tokens_max: int
    peak_tokens_per_minute: int
    token_limit: int
    run_seconds: float
    tasks_per_minute: float
    critical_before_lower: bool
    priorities: dict[str, int] = field(default_factory=dict)
    dead_reasons: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "tasks": self.tasks,
            "workers": self.workers,
            "concurrency": self.concurrency,
            "latency": list(self.latency),
            "simulated": self.simulated,
            "creation_seconds": round(self.creation_seconds, 4),
            "initial_depth": self.initial_depth,
            "completed": self.completed,
            "failed": self.failed,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "priority_inversions": self.priority_inversions,
            "avg_task_seconds": round(self.avg_task_seconds, 3),
            "tokens_per_task": {
                "min": self.tokens_min,
                "mean": round(self.tokens_mean, 1),
                "max": self.tokens_max,
            },
            "peak_tokens_per_minute": self.peak_tokens_per_minute,
            "token_limit": self.token_limit,
            "run_seconds": round(self.run_seconds, 3),
            "tasks_per_minute": round(self.tasks_per_minute, 1),
            "critical_before_lower": self.critical_before_lower,
            "priorities": self.priorities,
            "dead_reasons": self.dead_reasons,
        }

    def render(self) -> str:
        ref = REFERENCE
        rows = [
            ("tasks", f"{self.tasks}", f"{ref['tasks']}"),
            (
                "priorities",
                ", ".join(f"{n} {p}" for p, n in self.priorities.items()),
                "12 critical, 12 high, 11 medium, 13 low (48 of 50)",
            ),
            ("workers", f"{self.workers} x {self.concurrency} at once", "2 x 1"),
            (
                "model",
                "simulated" if self.simulated else "claude",
                "claude",
            ),
            (
                "creation",
                f"{self.creation_seconds:.3f} s "
                f"({self.creation_seconds / max(1, self.tasks) * 1000:.2f} ms each)",
                "1 s (about 20 ms each)",
            ),
            ("initial depth", f"{self.initial_depth}", "50"),
            ("avg task time", f"{self.avg_task_seconds:.2f} s", "3 to 5 s"),
            (
                "tokens per task",
                f"min {self.tokens_min}, mean {self.tokens_mean:.1f}, "
                f"max {self.tokens_max}",
                "about 100 to 136",
            ),
            ("completed", f"{self.completed}", "50"),
            ("failed", f"{self.failed}", "0"),
            ("lost", f"{self.lost}", "not reported"),
            ("duplicates", f"{self.duplicates}", "not reported"),
            ("priority inversions", f"{self.priority_inversions}", "0"),
            (
                "peak tokens/min",
                f"{self.peak_tokens_per_minute:,} of {self.token_limit:,}",
                "of 40,000",
            ),
            ("run time", f"{self.run_seconds:.2f} s", "about 100 s"),
            (
                "tasks per minute",
                f"{self.tasks_per_minute:.1f} "
                f"({self.tasks_per_minute / 30.0:.1f}x the reference)",
                "about 30",
            ),
        ]
        width = max(len(r[0]) for r in rows)
        value_width = max(len(r[1]) for r in rows)
        lines = [
            f"cortex stress: {self.tasks} tasks, simulated latency "
            f"{self.latency[0]:g}-{self.latency[1]:g} s",
            "",
            f"{'':{width}}  {'this run':{value_width}}  reference run",
        ]
        lines += [f"{a:{width}}  {b:{value_width}}  {c}" for a, b, c in rows]
        if self.dead_reasons:
            lines.append("")
            lines.append("dead-lettered:")
            lines += [f"  {tid}: {why}" for tid, why in self.dead_reasons.items()]
        return "\n".join(lines)


def count_inversions(events: list[Event]) -> int:
    """Claims made while a task of higher priority waited, replaying events."""
    waiting: dict[str, set[str]] = {str(p): set() for p in PRIORITIES}
    rank = {str(p): i for i, p in enumerate(PRIORITIES)}
    inversions = 0
    for ev in events:
        if ev.priority not in waiting:
            continue
        if ev.kind in _ENTERS_QUEUE:
            waiting[ev.priority].add(ev.task_id)
        elif ev.kind == "claimed":
            waiting[ev.priority].discard(ev.task_id)
            higher = [p for p, r in rank.items() if r < rank[ev.priority]]
            if any(waiting[p] for p in higher):
                inversions += 1
        elif ev.kind == "dead":
            waiting[ev.priority].discard(ev.task_id)
    return inversions


def count_duplicates(events: list[Event]) -> int:
    """Executions beyond the first per task; a hand-back ends one cleanly."""
    claims: dict[str, int] = defaultdict(int)
    for ev in events:
        if ev.kind == "claimed":
            claims[ev.task_id] += 1
        elif ev.kind == "handed_back":
            claims[ev.task_id] -= 1
    return sum(max(0, n - 1) for n in claims.values())


def peak_per_minute(results: list[TaskResult]) -> int:
    """Most tokens finished within any 60-second span."""
    points = sorted((r.finished_at, r.total_tokens) for r in results)
    best = total = start = 0
    for end in range(len(points)):
        total += points[end][1]
        while points[end][0] - points[start][0] > 60.0:
            total -= points[start][1]
            start += 1
        best = max(best, total)
    return best


async def _collect(system: System, after: str, sink: list[Event]) -> None:
    queue = system.services.queue
    while True:
        batch = await queue.read_events(after, block_ms=200, count=1000)
        if batch:
            sink.extend(batch)
            after = batch[-1].event_id
        raise_if_cancelled()


async def run_stress(
    settings: Settings,
    *,
    tasks: int = 50,
    workers: int = 2,
    concurrency: int = 8,
    latency: tuple[float, float] = (3.0, 5.0),
    timeout: float = 600.0,
    seed: int | None = None,
) -> StressReport:
    settings = settings.replace(
        namespace=f"stress-{int(time.time())}-{secrets.token_hex(3)}",
        workers=workers,
        concurrency=concurrency,
        sim_latency_min=latency[0],
        sim_latency_max=latency[1],
    )
    async with System.open(settings, start_workers=False) as system:
        sv = system.services
        backend = LocalBackend(
            settings, redis_url=sv.url, client=sv.client, keys=sv.keys
        )
        system.backend = backend
        await sv.queue.pause()
        await backend.set_desired(workers)
        backend.reconcile()
        supervisor = asyncio.ensure_future(backend.supervise())
        events: list[Event] = []
        collector = asyncio.ensure_future(
            _collect(system, await sv.queue.last_event_id(), events)
        )
        try:
            await _wait_for_workers(system, workers, timeout=60.0)
            batch = reference_tasks(
                tasks, seed=seed, max_attempts=settings.max_attempts
            )
            started = time.perf_counter()
            for task in batch:
                await sv.enqueue([task])
            creation = time.perf_counter() - started
            initial_depth = (await sv.queue.depths()).total_pending
            run_started = time.time()
            await sv.queue.resume()
            ids = [t.id for t in batch]
            records = await _wait_for_end(system, ids, timeout)
            run_seconds = time.time() - run_started
            await asyncio.sleep(0.3)  # let the collector read the last events
        finally:
            collector.cancel()
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
            await backend.stop_all()
    results = [r.result for r in records if r is not None and r.result is not None]
    done = [r for r in records if r is not None and r.state == "done"]
    dead = [r for r in records if r is not None and r.state == "dead"]
    tokens = [r.total_tokens for r in results] or [0]
    last_finish = max((r.finished_at for r in results), default=run_started)
    span = max(1e-6, last_finish - run_started)
    claims = [e for e in events if e.kind == "claimed"]
    first_lower = next(
        (i for i, e in enumerate(claims) if e.priority != Priority.CRITICAL), None
    )
    critical_before_lower = first_lower is None or all(
        e.priority != Priority.CRITICAL for e in claims[first_lower:]
    )
    return StressReport(
        tasks=tasks,
        workers=workers,
        concurrency=concurrency,
        latency=latency,
        simulated=settings.simulated,
        creation_seconds=creation,
        initial_depth=initial_depth,
        completed=len(done),
        failed=len(dead),
        lost=len(records) - len(done) - len(dead),
        duplicates=count_duplicates(events),
        priority_inversions=count_inversions(events),
        avg_task_seconds=statistics.fmean(r.seconds for r in results)
        if results
        else 0.0,
        tokens_min=min(tokens),
        tokens_mean=statistics.fmean(tokens),
        tokens_max=max(tokens),
        peak_tokens_per_minute=peak_per_minute(results),
        token_limit=settings.tokens_per_minute,
        run_seconds=run_seconds,
        tasks_per_minute=len(done) / span * 60.0,
        critical_before_lower=critical_before_lower,
        priorities={
            str(p): sum(1 for t in batch if t.priority == p) for p in PRIORITIES
        },
        dead_reasons={r.task_id: r.reason for r in dead},
    )


async def _wait_for_workers(system: System, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = await system.services.heartbeats.alive()
        if len(alive) >= count:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"only some of {count} workers started within {timeout:.0f}s")


async def _wait_for_end(system: System, ids: list[str], timeout: float) -> list[Any]:
    deadline = time.monotonic() + timeout
    queue = system.services.queue
    while True:
        records = await queue.get_many(ids)
        ended = sum(1 for r in records if r is not None and r.state in ("done", "dead"))
        if ended == len(ids) or time.monotonic() > deadline:
            return records
        await asyncio.sleep(0.1)
