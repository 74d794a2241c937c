"""A worker process: claims tasks, runs several at once, keeps their leases.

One asyncio loop runs the claim loop, one coroutine per running task, and
three housekeeping loops (lease renewal, reaping expired leases, heartbeat).
Every loop that talks to Redis survives Redis going away: it logs the outage
once, backs off, and carries on when Redis answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psutil
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cortex_core.aio import raise_if_cancelled, where
from cortex_core.audit import AuditTrail
from cortex_core.errors import TaskValidationError
from cortex_core.executor import ExecutionError, Executor
from cortex_core.heartbeat import Heartbeats, WorkerInfo
from cortex_core.limiter import BudgetTooSmall, RateLimiter, Reservation
from cortex_core.models import Priority, Task, TaskResult
from cortex_core.queue import Claim, TaskQueue

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_OUTAGE_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
#: While every slot is taken, how often to look again for slots whose tasks
#: wait on the budget (see ``Worker._urgent_slot_open``).
_SLOT_RECHECK_SECONDS = 0.5


class Outage:
    """Logs a Redis outage once when it starts and once when it ends."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.since: float | None = None
        self.delay = 0.05

    def failed(self, err: BaseException) -> float:
        if self.since is None:
            self.since = time.monotonic()
            logger.warning("%s: Redis unreachable (%s); retrying", self.what, err)
        delay = self.delay
        self.delay = min(self.delay * 2, 2.0)
        return delay * random.uniform(0.5, 1.0)

    def ok(self) -> None:
        if self.since is not None:
            logger.info(
                "%s: Redis back after %.1fs",
                self.what,
                time.monotonic() - self.since,
            )
            self.since = None
        self.delay = 0.05


class Worker:
    """Runs tasks from the queue until asked to stop."""

    def __init__(
        self,
        *,
        worker_id: str,
        queue: TaskQueue,
        limiter: RateLimiter,
        executor: Executor,
        heartbeats: Heartbeats,
        audit: AuditTrail | None,
        concurrency: int = 8,
        lease_seconds: float = 30.0,
        shutdown_grace: float = 20.0,
        reap_interval: float = 1.0,
    ) -> None:
        self.worker_id = worker_id
        self.queue = queue
        self.limiter = limiter
        self.executor = executor
        self.heartbeats = heartbeats
        self.audit = audit
        self.concurrency = concurrency
        self._urgent: frozenset[Priority] | None = (
            frozenset(Priority(p) for p in limiter.held_for)
            if limiter.held_permille > 0
            else None
        )
        """Priorities that may use the held share (None: no share is held)."""
        self._own_waits: dict[str, float] = {}
        """Task id to next attempt while the worker's own reserve waits."""
        self.lease_ms = int(lease_seconds * 1000)
        self.shutdown_grace = shutdown_grace
        self.reap_interval = reap_interval
        self.running: dict[str, tuple[Claim, asyncio.Task[None]]] = {}
        self.info = WorkerInfo(
            worker_id=worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=time.time(),
            concurrency=concurrency,
        )
        self._finishing: set[str] = set()
        #: Running crash suspects: while there is one, nothing else is claimed.
        self._suspects: set[str] = set()
        self._alone = asyncio.Event()
        self._stopping = asyncio.Event()
        self._closing = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._process = psutil.Process()
        self._process.cpu_percent(None)
        self.last_beat_ok: float | None = None
        """Monotonic time of the last heartbeat Redis took (probes read it)."""
        self.parent_pid: int | None = None
        """The supervisor's pid: the worker stops when its parent is no longer it."""
        self.superseded: Callable[[], Awaitable[bool]] | None = None
        """True once the supervisor that started this worker lost its claim to
        another (it froze past the claim's expiry): the worker then stops, so
        two sets of workers never run under the same names for long."""
        self.loops: list[asyncio.Task[None]] = []
        """The claim and housekeeping loops while ``run`` runs."""

    # Lifecycle ---------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming; running tasks get the grace period to finish."""
        if not self._stopping.is_set():
            logger.info(
                "worker %s: stopping, %d tasks running, grace %.0fs",
                self.worker_id,
                len(self.running),
                self.shutdown_grace,
            )
            self.info.state = "draining"
        self._stopping.set()
        self._slot_free.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def run(self) -> None:
        logger.info(
            "worker %s: started, pid %d, %d tasks at once, lease %.0fs",
            self.worker_id,
            self.info.pid,
            self.concurrency,
            self.lease_ms / 1000,
        )
        with contextlib.suppress(*_OUTAGE_ERRORS, RedisError):
            await self.limiter.sync_clock()
        every = self._every
        helpers = [
            asyncio.create_task(every(2.0, self._beat, "heartbeat"), name="heartbeat"),
            asyncio.create_task(
                every(self.lease_ms / 3000, self._renew, "lease renewal"),
                name="lease renewal",
            ),
            asyncio.create_task(
                every(self.reap_interval, self._reap, "reaper", jitter=True),
                name="reaper",
            ),
        ]
        current = asyncio.current_task()
        self.loops = [*helpers, *([current] if current is not None else [])]
        try:
            await self._claim_loop()
            await self._drain()
        finally:
            self.loops = []
            # The flag ends a loop even when redis-py swallowed its cancel.
            self._closing.set()
            for h in helpers:
                h.cancel()
            _, stuck = await asyncio.wait(helpers, timeout=5.0)
            for loop in stuck:
                logger.error(
                    "worker %s: a helper loop did not stop in 5s: %s",
                    self.worker_id,
                    where(loop),
                )
            with contextlib.suppress(*_OUTAGE_ERRORS, RedisError):
                await self.heartbeats.remove(self.worker_id)
            logger.info(
                "worker %s: stopped; %d done, %d failed",
                self.worker_id,
                self.info.done,
                self.info.failed,
            )

    # Claiming ----------------------------------------------------------------

    async def _claim_loop(self) -> None:
        outage = Outage(f"worker {self.worker_id}: claim")
        # After a failed claim call, Redis may hold claims this worker never
        # heard of: a script error after some claims, or a lost reply.
        unsure = False
        while not self._stopping.is_set():
            if self._suspects:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            only: frozenset[Priority] | None = None
            free = self.concurrency - len(self.running)
            if free <= 0:
                if not self._urgent_slot_open():
                    self._slot_free.clear()
                    # Bounded: a running task may start waiting on the budget
                    # without anything setting the event.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self._slot_free.wait(), timeout=_SLOT_RECHECK_SECONDS
                        )
                    continue
                only, free = self._urgent, 1
            try:
                if unsure:
                    await self._recover_lost_claims()
                    unsure = False
                claims = await self.queue.claim_many(
                    self.worker_id, self.lease_ms, free, only=only
                )
                if not claims:
                    await self._wait_for_work()
                outage.ok()
            except _OUTAGE_ERRORS as err:
                unsure = True
                await self._sleep(outage.failed(err))
                continue
            except RedisError:
                # A script error on one bad record must not end the worker.
                logger.exception("worker %s: claim failed", self.worker_id)
                unsure = True
                await self._sleep(1.0)
                continue
            for claim in claims:
                self._start(claim)

    async def _recover_lost_claims(self) -> None:
        """After an outage, hand back what Redis says this worker claimed but
        the worker never heard of: a claim whose reply the outage swallowed.
        Its attempt is not spent; without this it would wait for its lease."""
        known = {claim.token for claim, _ in self.running.values()}
        for claim in await self.queue.held_by(self.worker_id):
            if claim.token in known:
                continue
            if await self.queue.hand_back(claim, "claim reply lost"):
                logger.warning(
                    "task %s: claimed by worker %s but the reply was lost in an "
                    "outage; handed back",
                    claim.task_id,
                    self.worker_id,
                )
                self._audit(
                    claim.task_id,
                    "handed_back",
                    reason="claim reply lost",
                    worker=self.worker_id,
                )

    def _urgent_slot_open(self) -> bool:
        """True when tasks of priorities that may not use the held share wait
        on the budget in this worker's slots: urgent tasks may then run in
        extra slots (up to twice the concurrency), so that a backlog of low
        work that waits for budget cannot keep an incident's tasks out."""
        if not self._urgent or len(self.running) >= 2 * self.concurrency:
            return False
        waiting = self.rate_limited()
        blocked = sum(
            1
            for tid, (claim, _) in self.running.items()
            if tid in waiting and claim.priority not in self._urgent
        )
        return len(self.running) - blocked < self.concurrency

    def _note_wait(self, task_id: str, until: float | None) -> None:
        if until is None:
            self._own_waits.pop(task_id, None)
        else:
            self._own_waits[task_id] = until

    def rate_limited(self) -> dict[str, float]:
        """Task id to next attempt, for tasks this worker's reserves or its
        executor's calls hold on a limit. An executor written before
        ``waiting`` existed simply reports none."""
        executor_waits: dict[str, float] = getattr(self.executor, "waiting", {})
        return {**executor_waits, **self._own_waits}

    async def _wait_for_work(self) -> None:
        waiter = asyncio.ensure_future(self.queue.wait_for_work(timeout=1.0))
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not waiter.done():
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError, *_OUTAGE_ERRORS):
                    await waiter
            elif waiter.exception() is not None:
                raise waiter.exception()  # type: ignore[misc]

    def _start(self, claim: Claim) -> None:
        if claim.crashes:
            self._suspects.add(claim.task_id)
        job = asyncio.create_task(self._run_task(claim), name=f"task-{claim.task_id}")
        self.running[claim.task_id] = (claim, job)
        self.info.current = list(self.running)
        job.add_done_callback(lambda _: self._finished(claim.task_id))

    def _finished(self, task_id: str) -> None:
        self.running.pop(task_id, None)
        self._suspects.discard(task_id)
        self.info.current = list(self.running)
        self._slot_free.set()
        self._alone.set()

    # Running one task --------------------------------------------------------

    async def _run_task(self, claim: Claim) -> None:
        try:
            if claim.crashes:
                await self._wait_alone(claim)
            await self._execute(claim)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            # Last line of defence: whatever went wrong, the worker lives on
            # and the task is retried rather than left to its lease.
            logger.exception("task %s: failed unexpectedly", claim.task_id)
            await self._fail(
                claim, f"error: {type(err).__name__}: {err}", retryable=True
            )

    async def _wait_alone(self, claim: Claim) -> None:
        """A task some worker died holding runs alone, once the others end:
        if this process dies now, the task was the cause, and the tasks that
        merely shared a process with it are not charged again."""
        logger.info(
            "task %s: %d workers died holding it; running it alone",
            claim.task_id,
            claim.crashes,
        )
        while len(self.running) > 1:
            self._alone.clear()
            await self._alone.wait()

    async def _execute(self, claim: Claim) -> None:
        started = time.time()
        tid = claim.task_id
        self._audit(tid, "claimed", attempt=claim.attempt, worker=self.worker_id)
        try:
            task = Task.from_json(claim.payload)
        except TaskValidationError as err:
            reason = str(err)
            if not reason.startswith("decode:"):
                reason = f"decode: {reason}"
            await self._fail(claim, reason, retryable=False)
            return
        reservation: Reservation | None = None
        try:
            if not getattr(self.executor, "manages_budget", False):
                est_in, est_out = self.executor.estimate(task)
                reservation = await self._reserve(
                    tid, est_in, est_out, priority=str(task.priority)
                )
            execution = await self.executor.run(task)
        except asyncio.CancelledError:
            if reservation is not None:
                await self._quietly(self.limiter.release(reservation))
            raise
        except BudgetTooSmall as err:
            await self._fail(claim, f"budget: {err}", retryable=False)
            return
        except ExecutionError as err:
            if reservation is not None:
                await self._quietly(self.limiter.release(reservation))
            await self._fail(claim, f"model: {err}", retryable=err.retryable)
            return
        except Exception as err:
            logger.exception("task %s: executor raised", tid)
            if reservation is not None:
                await self._quietly(self.limiter.release(reservation))
            await self._fail(
                claim, f"error: {type(err).__name__}: {err}", retryable=True
            )
            return
        finally:
            self._own_waits.pop(tid, None)
            getattr(self.executor, "waiting", {}).pop(tid, None)
        held = reservation
        if held is not None:
            await self._retry_redis(
                lambda: self.limiter.settle(
                    held, execution.input_tokens, execution.output_tokens
                ),
                f"task {tid}: settle",
            )
        result = TaskResult(
            task_id=tid,
            ok=True,
            output=execution.output,
            model=execution.model,
            simulated=execution.simulated,
            input_tokens=execution.input_tokens,
            output_tokens=execution.output_tokens,
            worker=self.worker_id,
            attempt=claim.attempt,
            started_at=started,
            finished_at=time.time(),
            cache_creation_tokens=execution.cache_creation_tokens,
            cache_read_tokens=execution.cache_read_tokens,
            calls=execution.calls,
            stop_reason=execution.stop_reason,
            waited_seconds=execution.waited_seconds
            + (reservation.waited_seconds if reservation is not None else 0.0),
            cached=execution.cached,
            transcript=list(execution.transcript),
        )
        self._finishing.add(tid)
        try:
            recorded = await self._retry_redis(
                lambda: self.queue.complete(claim, result), f"task {tid}: complete"
            )
        finally:
            self._finishing.discard(tid)
        self.info.tokens += result.total_tokens
        if recorded:
            self.info.done += 1
            self._audit(tid, "done", worker=self.worker_id, result=result)
            logger.debug("task %s: done in %.2fs", tid, result.seconds)
        else:
            logger.warning(
                "task %s: lease was lost before completion; result discarded", tid
            )

    async def _reserve(
        self, tid: str, est_in: int, est_out: int, *, priority: str = ""
    ) -> Reservation:
        """Reserve budget; ride out a short outage rather than spend the
        attempt on it (the task has not run yet). A wait for budget is
        published as the task's next attempt."""

        def reserve() -> Awaitable[Reservation]:
            return self.limiter.reserve(
                est_in,
                est_out,
                who=f"task {tid}",
                priority=priority,
                on_wait=lambda until: self._note_wait(tid, until),
            )

        outage = Outage(f"task {tid}: reserve")
        for _ in range(29):
            try:
                reservation = await reserve()
                outage.ok()
                return reservation
            except _OUTAGE_ERRORS as err:
                await asyncio.sleep(outage.failed(err))
        return await reserve()

    async def _fail(self, claim: Claim, reason: str, *, retryable: bool) -> None:
        self._finishing.add(claim.task_id)
        try:
            outcome = await self._retry_redis(
                lambda: self.queue.fail(claim, reason, retryable=retryable),
                f"task {claim.task_id}: fail",
            )
        finally:
            self._finishing.discard(claim.task_id)
        if outcome is None:
            logger.warning(
                "task %s: lease lost before failure was recorded", claim.task_id
            )
            return
        self.info.failed += 1
        logger.warning("task %s: %s (%s)", claim.task_id, outcome, reason)
        self._audit(claim.task_id, outcome, worker=self.worker_id, reason=reason)

    # Shutdown ----------------------------------------------------------------

    async def _drain(self) -> None:
        if not self.running:
            return
        jobs = [job for _, job in self.running.values()]
        _done, pending = await asyncio.wait(jobs, timeout=self.shutdown_grace)
        if not pending:
            return
        logger.info(
            "worker %s: grace over, handing back %d tasks",
            self.worker_id,
            len(pending),
        )
        claims = [c for c, job in list(self.running.values()) if job in pending]
        for job in pending:
            job.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for claim in claims:
            ok = await self._retry_redis(
                lambda c=claim: self.queue.hand_back(c, "shutdown"),  # type: ignore[misc]
                f"task {claim.task_id}: hand back",
                attempts=5,
            )
            if ok:
                self._audit(
                    claim.task_id,
                    "handed_back",
                    reason="shutdown",
                    worker=self.worker_id,
                )

    # Housekeeping ------------------------------------------------------------

    async def _every(
        self,
        interval: float,
        action: Callable[[], Awaitable[None]],
        what: str,
        *,
        jitter: bool = False,
    ) -> None:
        outage = Outage(f"worker {self.worker_id}: {what}")
        while not self._closing.is_set():
            try:
                await action()
                outage.ok()
                delay = interval * (random.uniform(0.8, 1.2) if jitter else 1.0)
            except _OUTAGE_ERRORS as err:
                delay = outage.failed(err)
            except RedisError:
                logger.exception("worker %s: %s failed", self.worker_id, what)
                delay = interval
            raise_if_cancelled()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=delay)

    async def _beat(self) -> None:
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            if not self._stopping.is_set():
                logger.warning(
                    "worker %s: supervisor %d is gone; stopping",
                    self.worker_id,
                    self.parent_pid,
                )
            self.stop()
        stale = self.superseded
        if stale is not None and not self._stopping.is_set() and await stale():
            logger.warning(
                "worker %s: another process supervises the workers now; stopping",
                self.worker_id,
            )
            self.stop()
        self.info.cpu_percent = self._process.cpu_percent(None)
        self.info.rss_bytes = self._process.memory_info().rss
        self.info.rate_limited = self.rate_limited()
        await self.heartbeats.beat(self.info)
        self.last_beat_ok = time.monotonic()

    async def _renew(self) -> None:
        entries = list(self.running.values())
        if not entries:
            return
        kept = await self.queue.renew([c for c, _ in entries], self.lease_ms)
        for (claim, job), ok in zip(entries, kept, strict=True):
            # A task that is recording its own end is not cancelled: the
            # renewal may have raced with its completion.
            if not ok and not job.done() and claim.task_id not in self._finishing:
                logger.warning(
                    "task %s: lease lost (taken back by the reaper); stopping it",
                    claim.task_id,
                )
                job.cancel()

    async def _reap(self) -> None:
        reaped = await self.queue.reap()
        for task_id in reaped.returned:
            self._audit(task_id, "expired", worker=self.worker_id)
        for task_id in reaped.dead:
            self._audit(task_id, "dead", worker=self.worker_id, reason="lease expired")

    # Small helpers -----------------------------------------------------------

    def _audit(self, task_id: str, kind: str, **data: object) -> None:
        if self.audit is not None:
            self.audit.record(task_id, kind, **data)

    async def _retry_redis(
        self, call: Callable[[], Awaitable[_T]], what: str, attempts: int = 30
    ) -> _T | None:
        outage = Outage(what)
        for _ in range(attempts):
            try:
                value = await call()
                outage.ok()
                return value
            except _OUTAGE_ERRORS as err:
                await asyncio.sleep(outage.failed(err))
        logger.error(
            "%s: gave up after %d tries; the lease will expire", what, attempts
        )
        return None

    async def _quietly(self, call: Awaitable[object]) -> None:
        try:
            await call
        except (*_OUTAGE_ERRORS, RedisError) as err:
            logger.warning("worker %s: ignored %s during cleanup", self.worker_id, err)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
