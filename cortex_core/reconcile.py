"""Reconciliation of Redis with the audit trail.

The trail is replayed task by task (records ordered by their time) into the
state each task should have; :func:`verify` compares that with what Redis
holds, and with Redis's own structures (a pending record sits in its pending
list, a running one in the in-flight set...), and lists every difference;
:func:`restore` rebuilds in Redis the tasks the trail knows and Redis lost,
pending ones in their queues and dead ones in the dead-letter queue, without
queueing again any task the trail shows as done.

The trail of a busy system lags Redis by up to the writers' flush interval,
so a comparison is exact only on a quiet queue (no worker mid-task).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from cortex_core.audit import AuditTrail
from cortex_core.models import PRIORITIES, Task, TaskState, describe_validation_error
from cortex_core.queue import (
    CANCEL_REASON,
    IDEMPOTENCY_TTL_MS,
    Inventory,
    RestoreEntry,
    TaskQueue,
)

logger = logging.getLogger(__name__)

#: The state each kind of audit record leaves its task in. A kind not listed
#: here leaves the state named like the kind (and is reported if Redis
#: disagrees).
_STATE_AFTER = {
    "enqueued": "pending",
    "claimed": "running",
    "done": "done",
    "retry": "pending",
    "expired": "pending",
    "handed_back": "pending",
    "requeued": "pending",
    "crashed": "pending",
    "dead": "dead",
    "cancelled": "dead",
    "deleted": "deleted",
}
_RESTORE_BATCH = 500


@dataclass
class TrailTask:
    """What the audit trail says about one task."""

    task_id: str
    state: str = ""
    task: dict[str, Any] | None = None
    attempts: int = 0
    reason: str = ""
    result: dict[str, Any] | None = None
    enqueued_at: float = 0.0
    queued_at: float = 0.0
    finished_at: float | None = None
    records: int = 0


@dataclass(frozen=True)
class Difference:
    """One way Redis and the trail (or Redis and itself) disagree."""

    task_id: str
    redis: str
    trail: str
    problem: str

    def to_json(self) -> dict[str, str]:
        return {
            "task_id": self.task_id,
            "redis": self.redis,
            "trail": self.trail,
            "problem": self.problem,
        }


@dataclass
class VerifyReport:
    tasks_in_redis: int
    tasks_in_trail: int
    differences: list[Difference]
    expired_done: int = 0
    deleted: int = 0
    """Dead tasks an operator deleted: gone from Redis, as they should be."""

    @property
    def ok(self) -> bool:
        return not self.differences

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "tasks_in_redis": self.tasks_in_redis,
            "tasks_in_trail": self.tasks_in_trail,
            "expired_done": self.expired_done,
            "deleted": self.deleted,
            "differences": [d.to_json() for d in self.differences],
        }

    def render(self) -> str:
        lines = [
            f"{self.tasks_in_redis} tasks in Redis, {self.tasks_in_trail} in the "
            f"audit trail ({self.expired_done} done and past retention, "
            f"{self.deleted} deleted)"
        ]
        if self.ok:
            lines.append("Redis and the audit trail agree")
            return "\n".join(lines)
        lines.append(f"{len(self.differences)} differences:")
        lines.append(f"  {'task':<24}  {'redis':<10} {'trail':<10} problem")
        for d in self.differences:
            lines.append(
                f"  {d.task_id:<24}  {d.redis or '-':<10} {d.trail or '-':<10} "
                f"{d.problem}"
            )
        return "\n".join(lines)


@dataclass
class RestoreReport:
    restored: dict[str, int] = field(default_factory=dict)
    present: int = 0
    done_not_queued: int = 0
    skipped: list[Difference] = field(default_factory=list)
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "restored": self.restored,
            "already_in_redis": self.present,
            "done_not_queued": self.done_not_queued,
            "skipped": [d.to_json() for d in self.skipped],
        }

    def render(self) -> str:
        verb = "would restore" if self.dry_run else "restored"
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.restored.items()))
        lines = [
            f"{verb}: {counts or 'nothing'}",
            f"already in Redis (left alone): {self.present}",
            f"done in the trail (restored as done, never queued): "
            f"{self.done_not_queued}",
        ]
        for d in self.skipped:
            lines.append(f"skipped {d.task_id}: {d.problem}")
        return "\n".join(lines)


def replay(records: Iterable[dict[str, Any]]) -> dict[str, TrailTask]:
    """Fold audit records into the state each task ends in."""
    by_task: dict[str, list[tuple[float, int, dict[str, Any]]]] = {}
    for seq, rec in enumerate(records):
        task_id = rec.get("task_id")
        if not isinstance(task_id, str) or not isinstance(rec.get("kind"), str):
            continue
        at = rec.get("at")
        when = float(at) if isinstance(at, int | float) else 0.0
        by_task.setdefault(task_id, []).append((when, seq, rec))
    out: dict[str, TrailTask] = {}
    for task_id, items in by_task.items():
        items.sort(key=lambda item: (item[0], item[1]))
        out[task_id] = _fold(task_id, items)
    return out


def _fold(task_id: str, items: list[tuple[float, int, dict[str, Any]]]) -> TrailTask:
    t = TrailTask(task_id)
    for at, _, rec in items:
        kind = rec["kind"]
        t.records += 1
        if kind == "enqueued":
            task = rec.get("task")
            t.task = task if isinstance(task, dict) else None
            t.enqueued_at = t.queued_at = at
            # A producer writes "enqueued" after Redis answered, so a fast
            # worker's "claimed" can carry an earlier time: keep its state.
            if not t.state:
                t.state = "pending"
            continue
        t.state = _STATE_AFTER.get(kind, kind)
        if kind == "restored":
            # What restore rebuilt: the state and attempts Redis holds since.
            t.state = str(rec.get("state", ""))
            attempts = rec.get("attempts")
            t.attempts = attempts if isinstance(attempts, int) else t.attempts
            t.queued_at = at
        elif kind == "claimed":
            attempt = rec.get("attempt")
            if isinstance(attempt, int):
                t.attempts = max(t.attempts, attempt)
        elif kind == "handed_back":
            t.attempts = max(0, t.attempts - 1)
            t.queued_at = at
        elif kind == "requeued":
            t.attempts = 0
            t.reason = ""
            t.finished_at = None
            t.queued_at = at
        elif kind == "done":
            result = rec.get("result")
            t.result = result if isinstance(result, dict) else None
            t.finished_at = at
        if kind in ("retry", "expired", "crashed"):
            t.queued_at = at
        if kind in ("retry", "dead", "crashed"):
            reason = rec.get("reason")
            t.reason = reason if isinstance(reason, str) else t.reason
        if kind == "cancelled":
            reason = rec.get("reason")
            t.reason = reason if isinstance(reason, str) else CANCEL_REASON
        if kind in ("dead", "cancelled"):
            t.finished_at = at
    return t


async def verify(
    queue: TaskQueue, trail: AuditTrail, *, now: float | None = None
) -> VerifyReport:
    """Compare Redis with the audit trail; list every difference."""
    inv = await queue.inventory()
    tasks = replay(trail.records())
    now = time.time() if now is None else now
    retention = queue.done_retention_ms / 1000
    diffs = _structure(inv)
    expired = deleted = 0
    for task_id, t in sorted(tasks.items()):
        redis_state = inv.states.get(task_id)
        if redis_state is None and t.state == "deleted":
            deleted += 1
            continue
        if redis_state is None:
            finished = t.finished_at
            old = finished is not None and now - finished >= retention > 0
            if t.state == "done" and old:
                expired += 1
                continue
            diffs.append(Difference(task_id, "", t.state, "missing from Redis"))
        elif redis_state != t.state:
            diffs.append(Difference(task_id, redis_state, t.state, "states disagree"))
        elif t.task is None:
            diffs.append(
                Difference(
                    task_id, redis_state, t.state, "trail has no enqueued record"
                )
            )
    for task_id, state in sorted(inv.states.items()):
        if task_id not in tasks:
            diffs.append(Difference(task_id, state, "", "missing from the trail"))
    return VerifyReport(
        tasks_in_redis=len(inv.states),
        tasks_in_trail=len(tasks),
        differences=diffs,
        expired_done=expired,
        deleted=deleted,
    )


def _structure(inv: Inventory) -> list[Difference]:
    """Where Redis disagrees with itself: records and queue memberships."""
    diffs: list[Difference] = []
    places: dict[str, list[str]] = {}
    for prio, ids in inv.pending.items():
        for task_id in ids:
            places.setdefault(task_id, []).append(f"pending:{prio}")
    for task_id in inv.inflight:
        places.setdefault(task_id, []).append("inflight")
    for task_id in inv.dead:
        places.setdefault(task_id, []).append("dead")
    expected = {"pending": "pending:", "running": "inflight", "dead": "dead"}
    for task_id, where in sorted(places.items()):
        state = inv.states.get(task_id)
        if len(where) > 1:
            diffs.append(
                Difference(
                    task_id,
                    state or "",
                    "",
                    f"in {len(where)} places: " + ", ".join(where),
                )
            )
        if state is None:
            diffs.append(
                Difference(task_id, "", "", f"{where[0]} names no task record")
            )
            continue
        want = expected.get(state)
        if want is None or not all(w.startswith(want) for w in where):
            diffs.append(
                Difference(
                    task_id,
                    state,
                    "",
                    f"a {state or 'stateless'} record in {', '.join(where)}",
                )
            )
    for task_id, state in sorted(inv.states.items()):
        if state in expected and task_id not in places:
            home = "a pending list" if state == "pending" else expected[state]
            diffs.append(Difference(task_id, state, "", f"{state} but not in {home}"))
    return diffs


async def restore(
    queue: TaskQueue,
    trail: AuditTrail,
    *,
    dry_run: bool = False,
    now: float | None = None,
) -> RestoreReport:
    """Rebuild in Redis the tasks of the trail that Redis does not hold.

    Pending and running tasks go back to the tail of their queue, oldest
    first (a running task's attempt is not counted: Redis lost it, not the
    task); dead ones to the dead-letter queue with their reason; done ones
    come back as done records with their result and are never queued. A task
    Redis still holds is left alone.
    """
    now = time.time() if now is None else now
    report = RestoreReport(dry_run=dry_run)
    entries: list[RestoreEntry] = []
    tasks = replay(trail.records())
    for t in sorted(tasks.values(), key=lambda t: (t.queued_at, t.task_id)):
        entry = _entry(t, now, queue.done_retention_ms, report)
        if entry is not None:
            entries.append(entry)
    if dry_run:
        inv = await queue.inventory()
        for e in entries:
            if e.task.id in inv.states:
                report.present += 1
            else:
                _count(report, e)
        return report
    for i in range(0, len(entries), _RESTORE_BATCH):
        chunk = entries[i : i + _RESTORE_BATCH]
        for e, created in zip(chunk, await queue.restore_many(chunk), strict=True):
            if created:
                _count(report, e)
                trail.record(
                    e.task.id, "restored", state=str(e.state), attempts=e.attempts
                )
            else:
                report.present += 1
    if not trail.flush():
        logger.error("restore: the audit trail did not confirm its records")
    logger.info(
        "restore: %s; %d already in Redis; %d skipped",
        report.restored,
        report.present,
        len(report.skipped),
    )
    return report


def _count(report: RestoreReport, e: RestoreEntry) -> None:
    state = str(e.state)
    report.restored[state] = report.restored.get(state, 0) + 1
    if e.state == TaskState.DONE:
        report.done_not_queued += 1


def _entry(
    t: TrailTask, now: float, retention_ms: int, report: RestoreReport
) -> RestoreEntry | None:
    if t.state == "deleted":
        return None  # an operator's choice, not a loss
    if t.task is None:
        report.skipped.append(
            Difference(t.task_id, "", t.state, "trail has no enqueued record")
        )
        return None
    try:
        task = Task.model_validate(t.task)
    except ValidationError as err:
        problem = f"enqueued record invalid: {describe_validation_error(err)}"
        report.skipped.append(Difference(t.task_id, "", t.state, problem))
        return None
    if task.id != t.task_id or task.priority not in PRIORITIES:
        report.skipped.append(
            Difference(t.task_id, "", t.state, "enqueued record names another task")
        )
        return None
    idem_ttl = int(IDEMPOTENCY_TTL_MS - (now - t.enqueued_at) * 1000)
    common: dict[str, Any] = {
        "task": task,
        "enqueued_at_ms": int(t.queued_at * 1000),
        "idempotency_ttl_ms": max(0, idem_ttl),
    }
    if t.state in ("pending", "running"):
        attempts = t.attempts - 1 if t.state == "running" else t.attempts
        attempts = max(0, min(attempts, task.max_attempts - 1))
        return RestoreEntry(state=TaskState.PENDING, attempts=attempts, **common)
    finished_ms = int((t.finished_at or now) * 1000)
    if t.state == "dead":
        return RestoreEntry(
            state=TaskState.DEAD,
            attempts=t.attempts,
            finished_at_ms=finished_ms,
            reason=t.reason or "dead (reason not in the trail)",
            **common,
        )
    if t.state == "done":
        keep = retention_ms - int(now * 1000 - finished_ms) if retention_ms else 0
        if retention_ms and keep <= 0:
            return None
        result = json.dumps(t.result).encode() if t.result is not None else b""
        return RestoreEntry(
            state=TaskState.DONE,
            attempts=t.attempts,
            finished_at_ms=finished_ms,
            result=result,
            keep_ms=keep,
            **common,
        )
    report.skipped.append(
        Difference(t.task_id, "", t.state, f"state {t.state!r} cannot be restored")
    )
    return None


__all__ = [
    "Difference",
    "RestoreReport",
    "TrailTask",
    "VerifyReport",
    "replay",
    "restore",
    "verify",
]
