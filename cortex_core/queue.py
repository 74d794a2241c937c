"""The task queue in Redis: four priority levels, leases, dead letters, events.

Strict priority between levels and FIFO within one; a claim moves a task
into the in-flight set with a lease deadline on the server's clock. Idle
workers block on a wake list that every enqueue pushes to, so they claim
within milliseconds without polling.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from cortex_core import queue_scripts as lua
from cortex_core.aio import raise_if_cancelled
from cortex_core.errors import EnqueueRefused, InvalidTransition, UnknownTask
from cortex_core.keys import Keyspace
from cortex_core.models import (
    PRIORITIES,
    Priority,
    Task,
    TaskResult,
    TaskState,
    is_task_id,
)
from cortex_core.snapshot import LogEntry, QueueDepths, TaskRow

logger = logging.getLogger(__name__)

IDEMPOTENCY_TTL_MS = 24 * 3600 * 1000
DONE_RETENTION_MS = 7 * 24 * 3600 * 1000
#: Longest single blocking pop; below ``connection.COMMAND_TIMEOUT``.
MAX_BLOCK_SECONDS = 4.0
#: The reason a task an operator cancelled carries in the dead letters.
CANCEL_REASON = "cancelled by the operator"
#: Tasks one enqueue script takes; a longer batch is several, pipelined.
ENQUEUE_CHUNK = 200
_PRIORITY_NAMES = [str(p) for p in PRIORITIES]
#: Characters of a query kept in a list row.
ROW_QUERY_CHARS = 200
#: Events read, newest first, to find recently finished tasks for a list.
DONE_SCAN = 2000
_ROW_FIELDS = (
    "state",
    "priority",
    "category",
    "attempts",
    "max_attempts",
    "worker",
    "reason",
    "enqueued_at",
    "finished_at",
    "payload",
)


@dataclass(frozen=True)
class Claim:
    """A task this worker holds until its lease deadline."""

    task_id: str
    payload: bytes
    attempt: int
    max_attempts: int
    priority: Priority
    token: str
    deadline_ms: int
    crashes: int = 0
    """Worker processes that died holding this task; a worker runs such a
    suspect alone."""


@dataclass(frozen=True)
class TaskRecord:
    """A task as Redis holds it; ``task`` is None when its payload is bad."""

    task_id: str
    state: str
    priority: str
    category: str
    attempts: int
    max_attempts: int
    worker: str
    reason: str
    enqueued_at_ms: int | None
    claimed_at_ms: int | None
    finished_at_ms: int | None
    payload: bytes
    task: Task | None
    result: TaskResult | None
    decode_error: str | None = None


@dataclass(frozen=True)
class Event:
    """One entry of the task event stream."""

    event_id: str
    at: float
    kind: str
    task_id: str
    priority: str = ""
    category: str = ""
    worker: str = ""
    attempt: int = 0
    detail: str = ""

    def to_log_entry(self) -> LogEntry:
        return LogEntry(
            at=self.at,
            kind=self.kind,
            task_id=self.task_id,
            priority=self.priority,
            category=self.category,
            worker=self.worker,
            detail=self.detail,
            event_id=self.event_id,
        )


@dataclass
class ReapResult:
    returned: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RestoreEntry:
    """One task to rebuild in Redis from the audit trail."""

    task: Task
    state: TaskState
    attempts: int
    enqueued_at_ms: int
    finished_at_ms: int | None = None
    reason: str = ""
    result: bytes = b""
    keep_ms: int = 0
    idempotency_ttl_ms: int = 0


@dataclass(frozen=True)
class Inventory:
    """Every task record and every queue membership, read for a comparison.

    ``states`` maps each task id to its record's state ("" if it has none).
    The other fields list the ids each structure holds.
    """

    states: dict[str, str]
    pending: dict[str, list[str]]
    inflight: list[str]
    dead: list[str]


class TaskQueue:
    """All reads and writes of the queue's keys go through this class."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keyspace,
        *,
        events_maxlen: int = 10_000,
        done_retention_ms: int = DONE_RETENTION_MS,
        aging_ms: int = 0,
    ) -> None:
        self.client = client
        self.keys = keys
        self.events_maxlen = events_maxlen
        self.aging_ms = aging_ms
        self.done_retention_ms = done_retention_ms
        self._pending = [keys.pending(p) for p in PRIORITIES]
        self._enqueue_many = client.register_script(lua.ENQUEUE_MANY)
        self._claim = client.register_script(lua.CLAIM)
        self._renew = client.register_script(lua.RENEW)
        self._complete = client.register_script(lua.COMPLETE)
        self._fail = client.register_script(lua.FAIL)
        self._hand_back = client.register_script(lua.HAND_BACK)
        self._reap = client.register_script(lua.REAP)
        self._requeue = client.register_script(lua.REQUEUE)
        self._restore = client.register_script(lua.RESTORE)
        self._worker_crashed = client.register_script(lua.WORKER_CRASHED)
        self._cancel = client.register_script(lua.CANCEL)
        self._delete_dead = client.register_script(lua.DELETE_DEAD)
        self._oldest = client.register_script(lua.OLDEST)

    # Producing ---------------------------------------------------------------

    async def enqueue(self, task: Task) -> tuple[str, bool]:
        """Enqueue ``task``; return its id and whether it is new.

        With an idempotency key already used in the last 24 hours, the id
        returned is the earlier task's and nothing is enqueued.
        """
        return (await self.enqueue_many([task]))[0]

    async def enqueue_many(
        self, tasks: Sequence[Task], payloads: Sequence[bytes] | None = None
    ) -> list[tuple[str, bool]]:
        """Enqueue several tasks in one round trip, each atomically.

        ``payloads``, when given, are the tasks' ``to_json()``, made once by a
        caller that needs them too.
        """
        if not tasks:
            return []
        if payloads is None:
            payloads = [t.to_json() for t in tasks]
        chunks = [
            (tasks[i : i + ENQUEUE_CHUNK], payloads[i : i + ENQUEUE_CHUNK])
            for i in range(0, len(tasks), ENQUEUE_CHUNK)
        ]
        # Each chunk is one script, atomic on its own: when Redis refuses one
        # (out of memory), the caller learns which tasks it took.
        replies: list[Any]
        if len(chunks) == 1:
            # One call, no pipeline: a pipeline of scripts costs a round
            # trip more (SCRIPT EXISTS), which doubles a single enqueue.
            keys, args = self._enqueue_many_call(*chunks[0])
            try:
                replies = [await self._enqueue_many(keys, args)]
            except ResponseError as refusal:
                replies = [refusal]
        else:
            async with self.client.pipeline(transaction=False) as pipe:
                for chunk, chunk_payloads in chunks:
                    keys, args = self._enqueue_many_call(chunk, chunk_payloads)
                    await self._enqueue_many(keys, args, client=pipe)
                replies = await pipe.execute(raise_on_error=False)
        results: list[tuple[str, bool]] = []
        refused: list[tuple[Task, ResponseError]] = []
        pairs: list[tuple[Task, tuple[Any, Any] | ResponseError]] = []
        for (chunk, _), reply in zip(chunks, replies, strict=True):
            if isinstance(reply, ResponseError):
                pairs.extend((task, reply) for task in chunk)
            else:
                flat = list(reply)
                pairs.extend(
                    (task, (flat[2 * i], flat[2 * i + 1]))
                    for i, task in enumerate(chunk)
                )
        for task, outcome in pairs:
            if isinstance(outcome, ResponseError):
                refused.append((task, outcome))
                continue
            created, task_id = outcome
            results.append((_text(task_id), bool(created)))
            if not created:
                logger.info(
                    "task %s: not enqueued again; key %r names task %s",
                    task.id,
                    task.idempotency_key,
                    _text(task_id),
                )
        if refused:
            err = refused[0][1]
            cause = str(err)
            if "OOM command not allowed" in cause:
                cause = (
                    "out of memory (OOM: used memory is over maxmemory; raise "
                    "maxmemory or drain the queue)"
                )
            logger.error(
                "enqueue: Redis refused %d of %d tasks: %s",
                len(refused),
                len(tasks),
                err,
            )
            raise EnqueueRefused(
                f"Redis refused {len(refused)} of {len(tasks)} tasks, {cause}; "
                f"{len(results)} were enqueued (ids printed), the others were not",
                results,
                [t.id for t, _ in refused],
            ) from err
        return results

    def _enqueue_many_call(
        self, tasks: Sequence[Task], payloads: Sequence[bytes]
    ) -> tuple[list[str], list[Any]]:
        keys = [self.keys.events, self.keys.wake]
        args: list[Any] = [self.events_maxlen]
        for task, payload in zip(tasks, payloads, strict=True):
            tkey = self.keys.task(task.id)
            idem = task.idempotency_key
            keys += [
                tkey,
                self.keys.pending(task.priority),
                self.keys.idem_prefix + idem if idem else tkey,
            ]
            args += [
                task.id,
                payload,
                str(task.priority),
                task.category,
                task.max_attempts,
                IDEMPOTENCY_TTL_MS if idem else 0,
            ]
        return keys, args

    # Consuming ---------------------------------------------------------------

    async def claim(
        self,
        worker_id: str,
        lease_ms: int,
        *,
        only: frozenset[Priority] | None = None,
    ) -> Claim | None:
        """Take the oldest task of the highest unpaused priority, or None."""
        claims = await self.claim_many(worker_id, lease_ms, 1, only=only)
        return claims[0] if claims else None

    async def claim_many(
        self,
        worker_id: str,
        lease_ms: int,
        most: int,
        *,
        only: frozenset[Priority] | None = None,
    ) -> list[Claim]:
        """Take up to ``most`` tasks in one round trip, in the order one claim
        at a time would take them; an empty list when there is nothing. With
        ``only``, the other priorities are left where they are."""
        token = secrets.token_hex(8)
        pending = self._pending
        if only is not None:
            # A level left out is read from a key nothing ever writes.
            nothing = self.keys.key("pending", "-none-")
            pending = [
                key if prio in only else nothing
                for prio, key in zip(PRIORITIES, self._pending, strict=True)
            ]
        reply = await self._claim(
            [
                self.keys.inflight,
                self.keys.paused,
                self.keys.events,
                self.keys.dead,
                *pending,
            ],
            [
                worker_id,
                lease_ms,
                token,
                self.keys.task_prefix,
                self.events_maxlen,
                *_PRIORITY_NAMES,
                max(1, most),
                self.aging_ms,
            ],
        )
        claims = []
        for item in reply or []:
            task_id, payload, attempt, max_attempts, priority, deadline, crashes = item
            claims.append(
                Claim(
                    task_id=_text(task_id),
                    payload=bytes(payload or b""),
                    attempt=int(attempt),
                    max_attempts=int(max_attempts),
                    priority=Priority(_text(priority)),
                    token=token,
                    deadline_ms=int(deadline),
                    crashes=int(crashes),
                )
            )
        return claims

    async def wait_for_work(self, timeout: float) -> bool:
        """Block until an enqueue signals work or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            # Each blocking call stays below the client's socket timeout.
            step = max(0.001, min(left, MAX_BLOCK_SECONDS))
            if await self.client.blpop([self.keys.wake], timeout=step) is not None:
                return True
            raise_if_cancelled()

    async def renew(self, claims: Iterable[Claim], lease_ms: int) -> list[bool]:
        """Extend leases in one round trip; False where the lease was lost."""
        claims = list(claims)
        if not claims:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for c in claims:
                await self._renew(
                    [self.keys.inflight, self.keys.task(c.task_id)],
                    [c.task_id, c.token, lease_ms],
                    client=pipe,
                )
            replies = await pipe.execute()
        return [int(r) > 0 for r in replies]

    async def complete(self, claim: Claim, result: TaskResult) -> bool:
        """Record the result; False (and nothing written) if the lease is lost."""
        detail = f"{result.total_tokens} tokens in {result.seconds:.2f}s"
        reply = await self._complete(
            [self.keys.inflight, self.keys.task(claim.task_id), self.keys.events],
            [
                claim.task_id,
                claim.token,
                result.to_json(),
                self.done_retention_ms,
                self.events_maxlen,
                detail,
            ],
        )
        return int(reply) == 1

    async def fail(self, claim: Claim, reason: str, *, retryable: bool) -> str | None:
        """Retry or dead-letter a claimed task: 'retry', 'dead', or None if the
        lease was lost."""
        reply = await self._fail(
            [
                self.keys.inflight,
                self.keys.task(claim.task_id),
                self.keys.events,
                self.keys.dead,
                self.keys.wake,
                *self._pending,
            ],
            [
                claim.task_id,
                claim.token,
                reason[:2000],
                "1" if retryable else "0",
                self.events_maxlen,
                *_PRIORITY_NAMES,
            ],
        )
        return None if reply in (0, b"0") else _text(reply)

    async def hand_back(self, claim: Claim, reason: str) -> bool:
        """Return a running task to the head of its queue, attempt unspent."""
        reply = await self._hand_back(
            [
                self.keys.inflight,
                self.keys.task(claim.task_id),
                self.keys.events,
                self.keys.wake,
                *self._pending,
            ],
            [claim.task_id, claim.token, reason, self.events_maxlen, *_PRIORITY_NAMES],
        )
        return int(reply) == 1

    async def reap(self, limit: int = 100) -> ReapResult:
        """Return expired leases to their queues; dead-letter last attempts."""
        reply = await self._reap(
            [
                self.keys.inflight,
                self.keys.events,
                self.keys.dead,
                self.keys.wake,
                *self._pending,
            ],
            [self.keys.task_prefix, limit, self.events_maxlen, *_PRIORITY_NAMES],
        )
        out = _split(reply)
        for task_id in out.returned:
            logger.warning("task %s: lease expired, returned to its queue", task_id)
        for task_id in out.dead:
            logger.warning("task %s: lease expired on its last attempt, dead", task_id)
        return out

    async def worker_crashed(self, worker_id: str, reason: str) -> ReapResult:
        """Settle the tasks a dead worker process held: each attempt is spent
        with ``reason``; back to the tail of its queue, or dead on the last."""
        reply = await self._worker_crashed(
            [
                self.keys.inflight,
                self.keys.events,
                self.keys.dead,
                self.keys.wake,
                *self._pending,
            ],
            [
                self.keys.task_prefix,
                worker_id,
                reason[:500],
                self.events_maxlen,
                *_PRIORITY_NAMES,
            ],
        )
        out = _split(reply)
        for task_id in out.returned:
            logger.warning("task %s: worker %s crashed; retrying", task_id, worker_id)
        for task_id in out.dead:
            logger.warning(
                "task %s: worker %s crashed on its last attempt; dead",
                task_id,
                worker_id,
            )
        return out

    async def held_by(self, worker_id: str) -> list[Claim]:
        """The leases Redis shows ``worker_id`` holding, as claims that can be
        handed back (payload and attempt are not filled in)."""
        ids = [_text(i) for i in await self.client.zrange(self.keys.inflight, 0, -1)]
        if not ids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for task_id in ids:
                pipe.hmget(self.keys.task(task_id), ["worker", "lease", "priority"])
            replies = await pipe.execute()
        held = []
        for task_id, (worker, lease, priority) in zip(ids, replies, strict=True):
            if worker is None or lease is None or _text(worker) != worker_id:
                continue
            try:
                prio = Priority(_text(priority))
            except ValueError:
                continue
            held.append(
                Claim(
                    task_id=task_id,
                    payload=b"",
                    attempt=0,
                    max_attempts=0,
                    priority=prio,
                    token=_text(lease),
                    deadline_ms=0,
                )
            )
        return held

    # Operator actions --------------------------------------------------------

    async def requeue(self, task_id: str) -> None:
        """Move a dead task back to the tail of its queue with fresh attempts."""
        reply = await self._requeue(
            [
                self.keys.task(task_id),
                self.keys.dead,
                self.keys.events,
                self.keys.wake,
                *self._pending,
            ],
            [task_id, self.events_maxlen, *_PRIORITY_NAMES],
        )
        if reply == -1:
            raise UnknownTask(f"no task with id {task_id!r}")
        if reply != 1:
            raise InvalidTransition(
                f"task {task_id} is {_text(reply)}, only dead tasks can be requeued"
            )
        logger.info("task %s: requeued from the dead-letter queue", task_id)

    async def resolve_dead(self, given: str) -> str:
        """The full id of the dead task ``given`` names, whole or in part.

        The console shows an id by its last 8 characters (the first ones are
        its creation time); an operator can type those, or the id's start.
        Text that fits several dead tasks is refused, naming them, and so is
        text shorter than 4 characters.
        """
        if is_task_id(given):
            return given
        if len(given) < 4:
            raise UnknownTask(f"task id {given!r}: give at least 4 characters")
        dead = await self.dead_ids(limit=100_000)
        matches = [i for i in dead if i.startswith(given) or i.endswith(given)]
        if not matches:
            raise UnknownTask(f"no dead task whose id starts or ends with {given!r}")
        if len(matches) > 1:
            shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
            raise UnknownTask(
                f"{len(matches)} dead tasks fit {given!r} ({shown}); "
                "give more characters"
            )
        return matches[0]

    # Reconciliation ----------------------------------------------------------

    async def restore_many(self, entries: Sequence[RestoreEntry]) -> list[bool]:
        """Rebuild tasks lost from Redis, in one round trip; for each, False
        when Redis already had a record with its id (left as it was)."""
        if not entries:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for e in entries:
                await self._restore(*self._restore_call(e), client=pipe)
            replies = await pipe.execute()
        return [int(r) == 1 for r in replies]

    def _restore_call(self, e: RestoreEntry) -> tuple[list[str], list[Any]]:
        task = e.task
        tkey = self.keys.task(task.id)
        if e.state == TaskState.PENDING:
            target = self.keys.pending(task.priority)
        elif e.state == TaskState.DEAD:
            target = self.keys.dead
        elif e.state == TaskState.DONE:
            target = tkey
        else:
            raise InvalidTransition(f"task {task.id}: cannot restore as {e.state}")
        idem = task.idempotency_key
        keys = [
            tkey,
            target,
            self.keys.events,
            self.keys.wake,
            self.keys.idem_prefix + idem if idem else tkey,
        ]
        args: list[Any] = [
            task.id,
            task.to_json(),
            str(e.state),
            str(task.priority),
            task.category,
            e.attempts,
            task.max_attempts,
            e.enqueued_at_ms,
            "" if e.finished_at_ms is None else e.finished_at_ms,
            e.reason[:2000],
            e.result,
            e.keep_ms,
            e.idempotency_ttl_ms if idem else 0,
            self.events_maxlen,
        ]
        return keys, args

    async def inventory(self, batch: int = 1000) -> Inventory:
        """Read every task record's state and every queue's members."""
        ids: list[str] = []
        prefix = self.keys.task_prefix
        async for key in self.client.scan_iter(match=prefix + "*", count=batch):
            ids.append(_text(key)[len(prefix) :])
        states: dict[str, str] = {}
        for i in range(0, len(ids), batch):
            chunk = ids[i : i + batch]
            async with self.client.pipeline(transaction=False) as pipe:
                for task_id in chunk:
                    pipe.hget(self.keys.task(task_id), "state")
                replies = await pipe.execute()
            for task_id, state in zip(chunk, replies, strict=True):
                states[task_id] = "" if state is None else _text(state)
        async with self.client.pipeline(transaction=False) as pipe:
            for key in self._pending:
                pipe.lrange(key, 0, -1)
            pipe.zrange(self.keys.inflight, 0, -1)
            pipe.zrange(self.keys.dead, 0, -1)
            replies = await pipe.execute()
        return Inventory(
            states=states,
            pending={
                str(p): [_text(i) for i in ids]
                for p, ids in zip(PRIORITIES, replies[:4], strict=True)
            },
            inflight=[_text(i) for i in replies[4]],
            dead=[_text(i) for i in replies[5]],
        )

    async def cancel(self, task_id: str, reason: str = CANCEL_REASON) -> None:
        """Take a pending task off its queue into the dead letters."""
        reply = await self._cancel(
            [self.keys.task(task_id), self.keys.dead, self.keys.events, *self._pending],
            [task_id, reason[:2000], self.events_maxlen, *_PRIORITY_NAMES],
        )
        if reply == -1:
            raise UnknownTask(f"no task with id {task_id!r}")
        if reply != 1:
            raise InvalidTransition(
                f"task {task_id} is {_text(reply)}, only pending tasks can be cancelled"
            )
        logger.info("task %s: cancelled (%s)", task_id, reason)

    async def delete_dead(self, task_id: str) -> None:
        """Forget a dead task: its record and its place in the dead letters."""
        reply = await self._delete_dead(
            [self.keys.task(task_id), self.keys.dead, self.keys.events],
            [task_id, self.events_maxlen],
        )
        if reply == -1:
            raise UnknownTask(f"no task with id {task_id!r}")
        if reply != 1:
            raise InvalidTransition(
                f"task {task_id} is {_text(reply)}, only dead tasks can be deleted"
            )
        logger.info("task %s: deleted from the dead-letter queue", task_id)

    async def drain(self) -> None:
        """Stop claims everywhere until ``resume()``; running tasks finish."""
        await self.client.sadd(self.keys.paused, "drain")
        logger.info("queue all: draining")

    async def pause(self, priority: Priority | None = None) -> None:
        """Stop claims of one priority, or of all when ``priority`` is None."""
        await self.client.sadd(self.keys.paused, str(priority or "all"))
        logger.info("queue %s: paused", priority or "all")

    async def resume(self, priority: Priority | None = None) -> None:
        """Restart claims of one priority, or of everything: without a
        priority every pause ends, each priority's and a drain's too."""
        name = str(priority or "all")
        async with self.client.pipeline(transaction=False) as pipe:
            if priority:
                pipe.srem(self.keys.paused, name)
            else:
                pipe.delete(self.keys.paused)
            # One wake signal per idle worker that may be waiting.
            pipe.lpush(self.keys.wake, *(["1"] * 64))
            pipe.ltrim(self.keys.wake, 0, 63)
            await pipe.execute()
        logger.info("queue %s: resumed", name)

    # Reading -----------------------------------------------------------------

    async def depths(self) -> QueueDepths:
        async with self.client.pipeline(transaction=False) as pipe:
            for key in self._pending:
                pipe.llen(key)
            pipe.zcard(self.keys.inflight)
            pipe.zcard(self.keys.dead)
            pipe.smembers(self.keys.paused)
            await self._oldest(self._pending, [self.keys.task_prefix], client=pipe)
            pipe.time()
            replies = await pipe.execute()
        pending = {p: int(n) for p, n in zip(PRIORITIES, replies[:4], strict=True)}
        seconds, micros = replies[8]
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        oldest = {
            p: max(0.0, (now_ms - int(at)) / 1000)
            for p, at in zip(PRIORITIES, replies[7], strict=True)
            if int(at) >= 0
        }
        return QueueDepths(
            pending=pending,
            in_flight=int(replies[4]),
            dead=int(replies[5]),
            paused=frozenset(_text(m) for m in replies[6]),
            oldest=oldest,
        )

    async def get(self, task_id: str) -> TaskRecord:
        raw: Any = await self.client.hgetall(self.keys.task(task_id))
        if not raw:
            raise UnknownTask(f"no task with id {task_id!r}")
        return _record(task_id, raw)

    async def get_many(self, task_ids: Sequence[str]) -> list[TaskRecord | None]:
        async with self.client.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hgetall(self.keys.task(task_id))
            replies = await pipe.execute()
        return [
            _record(task_id, raw) if raw else None
            for task_id, raw in zip(task_ids, replies, strict=True)
        ]

    async def page(
        self,
        states: Sequence[str],
        priorities: Sequence[str],
        offset: int,
        count: int,
    ) -> tuple[list[str], int]:
        """Ids ``offset`` to ``offset + count`` of the list made of ``states``
        (running, pending highest priority first, dead newest first, done
        newest first) limited to ``priorities``, and the list's length.

        Two round trips: lengths, then the ranges the window covers. Done
        tasks have no index of their own: they are the recently finished ones
        the event stream names.
        """
        levels = [p for p in _PRIORITY_NAMES if p in priorities]
        sources: list[tuple[str, str]] = []
        for state in states:
            if state == "running":
                sources.append(("running", self.keys.inflight))
            elif state == "pending":
                sources += [("pending", self.keys.pending(p)) for p in levels]
            elif state == "dead":
                sources.append(("dead", self.keys.dead))
        async with self.client.pipeline(transaction=False) as pipe:
            for kind, key in sources:
                if kind == "pending":
                    pipe.llen(key)
                else:
                    pipe.zcard(key)
            if "done" in states:
                pipe.xrevrange(self.keys.events, count=DONE_SCAN)
            replies = await pipe.execute()
        lengths = [int(n) for n in replies[: len(sources)]]
        done_ids: list[str] = []
        if "done" in states:
            seen: set[str] = set()
            for _eid, fields in replies[-1]:
                if fields.get(b"kind") != b"done":
                    continue
                task_id = _text(fields.get(b"task", b""))
                if task_id not in seen and _text(fields.get(b"priority")) in levels:
                    seen.add(task_id)
                    done_ids.append(task_id)
        total = sum(lengths) + len(done_ids)
        wanted: list[tuple[str, str, int, int]] = []
        start = offset
        end = offset + count
        position = 0
        for (kind, key), length in zip(sources, lengths, strict=True):
            lo, hi = max(start, position), min(end, position + length)
            if lo < hi:
                wanted.append((kind, key, lo - position, hi - position - 1))
            position += length
        async with self.client.pipeline(transaction=False) as pipe:
            for kind, key, lo, hi in wanted:
                if kind == "pending":
                    pipe.lrange(key, lo, hi)
                elif kind == "dead":
                    pipe.zrevrange(key, lo, hi)
                else:
                    pipe.zrange(key, lo, hi)
            ranges = await pipe.execute() if wanted else []
        ids = [_text(i) for chunk in ranges for i in chunk]
        lo, hi = max(start, position), min(end, position + len(done_ids))
        ids += done_ids[lo - position : hi - position] if lo < hi else []
        return ids, total

    async def rows(self, task_ids: Sequence[str]) -> list[TaskRow]:
        """The list rows of these tasks, in one round trip; gone ones left out."""
        async with self.client.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hmget(self.keys.task(task_id), list(_ROW_FIELDS))
            replies = await pipe.execute()
        rows: list[TaskRow] = []
        for task_id, values in zip(task_ids, replies, strict=True):
            raw = dict(zip(_ROW_FIELDS, values, strict=True))
            if raw["state"] is None:
                continue
            rows.append(_row(task_id, raw))
        return rows

    async def task_events(self, task_id: str, scan: int) -> list[Event]:
        """The events of one task among the newest ``scan``, oldest first."""
        raw: Any = await self.client.xrevrange(self.keys.events, count=scan)
        mine = [
            _event(eid, fields)
            for eid, fields in raw
            if fields.get(b"task") == task_id.encode()
        ]
        mine.reverse()
        return mine

    async def dead_ids(self, limit: int = 1000) -> list[str]:
        ids = await self.client.zrange(self.keys.dead, 0, limit - 1)
        return [_text(i) for i in ids]

    async def events(
        self, *, count: int = 200, after: str | None = None
    ) -> list[Event]:
        """The newest ``count`` events, newest first; or, with ``after``, the
        events after that id, oldest first."""
        raw: Any
        if count <= 0:
            return []
        if after is None:
            raw = await self.client.xrevrange(self.keys.events, count=count)
        else:
            raw = await self.client.xrange(
                self.keys.events, min=f"({after}", count=count
            )
        return [_event(eid, fields) for eid, fields in raw]

    async def read_events(self, after: str, block_ms: int, count: int) -> list[Event]:
        """Block up to ``block_ms`` for events after ``after`` (oldest first)."""
        reply: Any = await self.client.xread(
            {self.keys.events: after}, count=count, block=block_ms
        )
        events: list[Event] = []
        for _stream, entries in reply or []:
            events.extend(_event(eid, fields) for eid, fields in entries)
        return events

    async def last_event_id(self) -> str:
        raw: Any = await self.client.xrevrange(self.keys.events, count=1)
        return _text(raw[0][0]) if raw else "0-0"


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _split(reply: Sequence[Any]) -> ReapResult:
    """A script's ``{returned..., '|', dead...}`` reply."""
    out = ReapResult()
    target = out.returned
    for item in reply:
        text = _text(item)
        if text == "|":
            target = out.dead
        else:
            target.append(text)
    return out


def _int(value: bytes | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _record(task_id: str, raw: dict[bytes, bytes]) -> TaskRecord:
    payload = raw.get(b"payload", b"")
    task: Task | None = None
    decode_error: str | None = None
    try:
        task = Task.from_json(payload)
    except Exception as err:
        decode_error = str(err)
    result: TaskResult | None = None
    if b"result" in raw:
        try:
            result = TaskResult.from_json(raw[b"result"])
        except Exception as err:
            decode_error = f"result: {err}"
    return TaskRecord(
        task_id=task_id,
        state=_text(raw.get(b"state", b"")),
        priority=_text(raw.get(b"priority", b"")),
        category=_text(raw.get(b"category", b"")),
        attempts=_int(raw.get(b"attempts")) or 0,
        max_attempts=_int(raw.get(b"max_attempts")) or 0,
        worker=_text(raw.get(b"worker", b"")),
        reason=_text(raw.get(b"reason", b"")),
        enqueued_at_ms=_int(raw.get(b"enqueued_at")),
        claimed_at_ms=_int(raw.get(b"claimed_at")),
        finished_at_ms=_int(raw.get(b"finished_at")),
        payload=payload,
        task=task,
        result=result,
        decode_error=decode_error,
    )


def _row(task_id: str, raw: dict[str, bytes | None]) -> TaskRow:
    """A list row from the fields ``_ROW_FIELDS`` read; the query comes from
    the payload, or the payload itself when it is not a valid task."""
    payload = raw["payload"] or b""
    try:
        query = Task.from_json(payload).query
    except Exception:  # a bad payload still gets a row, showing what it holds
        query = payload[:ROW_QUERY_CHARS].decode("utf-8", "replace")
    enqueued = _int(raw["enqueued_at"])
    finished = _int(raw["finished_at"])
    return TaskRow(
        task_id=task_id,
        state=_text(raw["state"]),
        priority=_text(raw["priority"] or b""),
        category=_text(raw["category"] or b""),
        attempts=_int(raw["attempts"]) or 0,
        max_attempts=_int(raw["max_attempts"]) or 0,
        worker=_text(raw["worker"] or b""),
        reason=_text(raw["reason"] or b""),
        query=" ".join(query[:ROW_QUERY_CHARS].split()),
        enqueued_at=None if enqueued is None else enqueued / 1000,
        finished_at=None if finished is None else finished / 1000,
    )


def _event(event_id: bytes | str, fields: dict[bytes, bytes]) -> Event:
    eid = _text(event_id)
    ms = int(eid.split("-", 1)[0])
    attempt = _int(fields.get(b"attempt")) or 0
    return Event(
        event_id=eid,
        at=ms / 1000.0,
        kind=_text(fields.get(b"kind", b"")),
        task_id=_text(fields.get(b"task", b"")),
        priority=_text(fields.get(b"priority", b"")),
        category=_text(fields.get(b"category", b"")),
        worker=_text(fields.get(b"worker", b"")),
        attempt=attempt,
        detail=_text(fields.get(b"detail", b"")),
    )


__all__ = [
    "Claim",
    "Event",
    "Inventory",
    "ReapResult",
    "RestoreEntry",
    "TaskQueue",
    "TaskRecord",
    "TaskState",
]
