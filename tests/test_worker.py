"""The worker: concurrency, leases, malformed data, failures, heartbeats,
shutdown; in this process and as ``cortex worker`` subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from helpers import (
    RaisingExecutor,
    events_of,
    finish,
    kinds,
    make_task,
    make_worker,
    running,
    wait_for,
    worker_process,
)

from cortex_core.aio import where
from cortex_core.config import Settings
from cortex_core.executor import Execution, ExecutionError, SimulatedExecutor
from cortex_core.heartbeat import WorkerInfo
from cortex_core.models import Task
from cortex_core.queue import Event
from cortex_core.system import Services


def max_overlap(events: list[Event], ids: set[str]) -> int:
    """Most of ``ids`` between their claim and their end at any one time."""
    now = peak = 0
    for ev in events:
        if ev.task_id not in ids:
            continue
        if ev.kind == "claimed":
            now += 1
            peak = max(peak, now)
        elif ev.kind in ("done", "retry", "dead", "handed_back", "expired"):
            now -= 1
    return peak


async def state_of(services: Services, task_id: str) -> str:
    return (await services.queue.get(task_id)).state


async def all_in_state(services: Services, ids: list[str], state: str) -> bool:
    records = await services.queue.get_many(ids)
    return all(r is not None and r.state == state for r in records)


# Concurrency -----------------------------------------------------------------


async def test_runs_several_tasks_at_once(services: Services) -> None:
    """With concurrency 8, eight half-second tasks run at the same time."""
    tasks = [make_task() for _ in range(8)]
    ids = [t.id for t in tasks]
    await services.enqueue(tasks)
    worker = make_worker(services, SimulatedExecutor(0.5, 0.5), concurrency=8)
    seen = 0
    async with running(worker):

        async def all_done() -> bool:
            nonlocal seen
            seen = max(seen, len(worker.running))
            return await all_in_state(services, ids, "done")

        await wait_for(all_done, "8 tasks done", interval=0.02)
    assert seen >= 2, f"at most {seen} task(s) seen running at once"
    assert max_overlap(await events_of(services.queue), set(ids)) >= 2


async def test_never_runs_more_than_its_concurrency(services: Services) -> None:
    """A worker with concurrency 2 never holds more than two tasks at once."""
    tasks = [make_task() for _ in range(6)]
    ids = [t.id for t in tasks]
    await services.enqueue(tasks)
    worker = make_worker(services, SimulatedExecutor(0.15, 0.15), concurrency=2)
    async with running(worker):
        await wait_for(lambda: all_in_state(services, ids, "done"), "6 tasks done")
    overlap = max_overlap(await events_of(services.queue), set(ids))
    assert overlap == 2


# Leases ----------------------------------------------------------------------


async def test_lease_is_renewed_for_a_long_task(services: Services) -> None:
    """A task longer than its lease runs once and completes.

    Renewal comes every third of the lease, so a renewal may be late by two
    thirds of it before the reaper takes the task back: 2s with a 3s lease,
    where a 1s lease left a busy machine 0.67s.
    """
    task = make_task()
    await services.enqueue([task])
    worker = make_worker(
        services, SimulatedExecutor(4.5, 4.5), lease_seconds=3.0, reap_interval=0.2
    )
    async with running(worker):
        await wait_for(lambda: all_in_state(services, [task.id], "done"), "done")
    record = await services.queue.get(task.id)
    assert record.attempts == 1
    assert record.result is not None and record.result.attempt == 1
    assert kinds(await events_of(services.queue, task.id)) == [
        "enqueued",
        "claimed",
        "done",
    ]


# Malformed data --------------------------------------------------------------

_BAD_ID = "0123456789abcdef01234567"


async def _write_record(
    raw: aioredis.Redis, services: Services, fields: dict[str, object]
) -> None:
    keys = services.keys
    await raw.hset(keys.task(_BAD_ID), mapping=fields)  # type: ignore[arg-type]
    await raw.rpush(keys.pending("high"), _BAD_ID)


def _record_fields(payload: bytes) -> dict[str, object]:
    return {
        "payload": payload,
        "state": "pending",
        "priority": "high",
        "category": "cicd",
        "attempts": 0,
        "max_attempts": 3,
        "enqueued_at": int(time.time() * 1000),
    }


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b'{"id": "0123456789abcdef01234567", "query":', id="bad-json"),
        pytest.param(b"\xff\xfe{\x80 not utf-8 \xc3\x28", id="not-utf8"),
        pytest.param(b'{"hello": "world"}', id="json-not-a-task"),
    ],
)
async def test_malformed_payload_is_dead_lettered(
    services: Services, raw_redis: aioredis.Redis, payload: bytes
) -> None:
    """A task record with a bad payload goes to the dead letters; work goes on."""
    await _write_record(raw_redis, services, _record_fields(payload))
    good = make_task()
    await services.enqueue([good])
    async with running(make_worker(services)) as job:
        await wait_for(lambda: all_in_state(services, [good.id], "done"), "good task")
        assert not job.done(), "the worker stopped"
    bad = await services.queue.get(_BAD_ID)
    assert bad.state == "dead"
    assert bad.reason.startswith("decode:"), bad.reason
    assert bad.attempts == 1
    assert await services.queue.dead_ids() == [_BAD_ID]
    dead = [e for e in await events_of(services.queue, _BAD_ID) if e.kind == "dead"]
    assert len(dead) == 1 and dead[0].detail.startswith("decode:")


async def test_garbage_queue_entry_is_dead_lettered(
    services: Services, raw_redis: aioredis.Redis
) -> None:
    """A queue entry naming no task record is dead-lettered; work goes on."""
    entry = b"\x00\xffnot a task id"
    await raw_redis.rpush(services.keys.pending("high"), entry)
    good = make_task()
    await services.enqueue([good])
    async with running(make_worker(services)) as job:
        await wait_for(lambda: all_in_state(services, [good.id], "done"), "good task")
        assert not job.done(), "the worker stopped"
    bad_id = hashlib.sha1(entry).hexdigest()[:24]
    assert await services.queue.dead_ids() == [bad_id]
    record = await services.queue.get(bad_id)
    assert record.state == "dead"
    assert record.reason.startswith("decode:"), record.reason
    assert record.payload == entry
    assert (await services.queue.depths()).total_pending == 0


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"max_attempts": None}, id="no-max-attempts"),
        pytest.param({"payload": None}, id="no-payload"),
        pytest.param({"attempts": "many"}, id="attempts-not-a-number"),
    ],
)
async def test_incomplete_record_is_dead_lettered(
    services: Services, raw_redis: aioredis.Redis, change: dict[str, object]
) -> None:
    """A record missing fields, or with a non-numeric one, is dead-lettered
    with a decode reason; the worker survives and completes the next task."""
    fields = {**_record_fields(b"{}"), **change}
    await _write_record(
        raw_redis, services, {k: v for k, v in fields.items() if v is not None}
    )
    good = make_task()
    await services.enqueue([good])
    worker = make_worker(services, lease_seconds=1.0, reap_interval=0.2)
    job = asyncio.create_task(worker.run())
    try:
        with contextlib.suppress(AssertionError):
            await wait_for(
                lambda: job.done() or all_in_state(services, [good.id], "done"),
                "the good task to end",
            )
        bad = await services.queue.get(_BAD_ID)
        queued = await raw_redis.lpos(services.keys.pending("high"), _BAD_ID)
        where = f"bad record {bad.state!r}, {'in' if queued is not None else 'in no'}"
        assert not job.done(), f"the worker died: {job.exception()!r}; {where} queue"
        assert await state_of(services, good.id) == "done", f"stuck; {where} queue"
        assert bad.state == "dead", where
        assert bad.reason.startswith("decode:"), bad.reason
    finally:
        worker.stop()
        await finish(job, timeout=3)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param(
            {"attempts": "1.5"},
            "decode: attempts is not a whole number >= 0",
            id="attempts-fraction",
        ),
        pytest.param(
            {"attempts": "-5"},
            "decode: attempts is not a whole number >= 0",
            id="attempts-negative",
        ),
        pytest.param(
            {"attempts": "0x10"},
            "decode: attempts is not a whole number >= 0",
            id="attempts-hex",
        ),
        pytest.param(
            {"state": "bogus"},
            "decode: queued, but its record says state bogus",
            id="state-unknown",
        ),
        pytest.param(
            {"state": "running"},
            "decode: queued, but its record says state running",
            id="state-running-but-not-in-flight",
        ),
    ],
)
async def test_bad_record_in_a_claim_batch_is_dead_and_the_batch_runs(
    services: Services,
    raw_redis: aioredis.Redis,
    change: dict[str, object],
    reason: str,
) -> None:
    """A valid task whose record has a field the claim script cannot use,
    queued behind good tasks that the same claim call takes: it is dead with
    its reason, and the good ones run at once, not after their lease."""
    good = [make_task("cicd", "high") for _ in range(3)]
    await services.enqueue(good)
    bad = make_task("cicd", "high")
    fields = {**_record_fields(bad.to_json()), **change}
    await raw_redis.hset(services.keys.task(bad.id), mapping=fields)  # type: ignore[arg-type]
    await raw_redis.rpush(services.keys.pending("high"), bad.id)
    worker = make_worker(services, lease_seconds=60.0)
    async with running(worker) as job:
        await wait_for(
            lambda: all_in_state(services, [g.id for g in good], "done"), "good"
        )
        assert not job.done(), "the worker stopped"
    record = await services.queue.get(bad.id)
    assert (record.state, record.reason) == ("dead", reason)
    assert await services.queue.dead_ids() == [bad.id]
    depths = await services.queue.depths()
    assert depths.total_pending == 0 and depths.in_flight == 0
    for g in good:
        assert (await services.queue.get(g.id)).attempts == 1


async def test_a_stale_entry_of_a_finished_task_does_not_run_it_again(
    services: Services, raw_redis: aioredis.Redis
) -> None:
    """A second queue entry of a task already done is dropped, not run."""
    task = make_task("cicd", "high")
    await services.enqueue([task])
    async with running(make_worker(services)):
        await wait_for(lambda: all_in_state(services, [task.id], "done"), "done")
    await raw_redis.rpush(services.keys.pending("high"), task.id)
    async with running(make_worker(services, worker_id="again")):
        await wait_for(
            lambda: _pending_is_empty(services), "the stale entry to be taken"
        )
    record = await services.queue.get(task.id)
    assert record.state == "done" and record.attempts == 1
    assert await services.queue.dead_ids() == []


async def _pending_is_empty(services: Services) -> bool:
    return (await services.queue.depths()).total_pending == 0


# Executor failures -----------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "calls", "prefix"),
    [
        pytest.param(RuntimeError("boom"), 3, "error: RuntimeError: boom", id="bug"),
        pytest.param(
            ExecutionError("overloaded", retryable=True),
            3,
            "model: overloaded",
            id="retryable",
        ),
        pytest.param(
            ExecutionError("bad request", retryable=False),
            1,
            "model: bad request",
            id="final",
        ),
    ],
)
async def test_failing_executor_retries_then_dead_letters(
    services: Services, error: BaseException, calls: int, prefix: str
) -> None:
    """A task whose executor fails is retried up to max_attempts, then dead."""
    task = make_task(max_attempts=3)
    await services.enqueue([task])
    executor = RaisingExecutor(error)
    async with running(make_worker(services, executor)) as job:
        await wait_for(lambda: all_in_state(services, [task.id], "dead"), "dead")
        assert not job.done(), "the worker stopped"
    record = await services.queue.get(task.id)
    assert executor.calls == calls
    assert record.attempts == calls
    assert record.reason.startswith(prefix), record.reason
    assert await services.queue.dead_ids() == [task.id]
    events = kinds(await events_of(services.queue, task.id))
    assert events.count("claimed") == calls
    assert events.count("retry") == calls - 1
    assert events[-1] == "dead"


class _PickyExecutor(SimulatedExecutor):
    """Fails in ``estimate`` for security, in ``run`` for inventory."""

    def estimate(self, task: Task) -> tuple[int, int]:
        if task.category == "security":
            raise KeyError("no estimate")
        return super().estimate(task)

    async def run(self, task: Task) -> Execution:
        if task.category == "inventory":
            raise ZeroDivisionError("division by zero")
        return await super().run(task)


async def test_worker_survives_executor_exceptions(services: Services) -> None:
    """Exceptions from estimate or run fail that task only; the worker goes on."""
    failing = [
        make_task("security", max_attempts=1),
        make_task("inventory", max_attempts=1),
    ]
    good = [make_task("cicd") for _ in range(3)]
    await services.enqueue(failing + good)
    worker = make_worker(services, _PickyExecutor(0.01, 0.02))
    async with running(worker) as job:
        await wait_for(
            lambda: all_in_state(services, [t.id for t in good], "done"), "good tasks"
        )
        await wait_for(
            lambda: all_in_state(services, [t.id for t in failing], "dead"), "dead"
        )
        assert not job.done(), "the worker stopped"
        assert worker.info.done == 3
        assert worker.info.failed == 2
    reasons = [(await services.queue.get(t.id)).reason for t in failing]
    assert reasons[0].startswith("error: KeyError"), reasons[0]
    assert reasons[1].startswith("error: ZeroDivisionError"), reasons[1]


# Heartbeat -------------------------------------------------------------------


async def test_heartbeat_describes_the_worker(services: Services) -> None:
    """The heartbeat record names the worker, its tasks and usage, and expires."""
    tasks = [make_task() for _ in range(2)]
    ids = [t.id for t in tasks]
    await services.enqueue(tasks)
    worker = make_worker(services, SimulatedExecutor(2.5, 2.5), worker_id="beater")
    key = services.keys.worker("beater")

    async def beat_where(wanted: Callable[[WorkerInfo], bool]) -> WorkerInfo | None:
        raw = await services.client.get(key)
        info = WorkerInfo.from_json(raw) if raw is not None else None
        return info if info is not None and wanted(info) else None

    async with running(worker):
        busy = await wait_for(
            lambda: beat_where(lambda i: len(i.current) == 2),
            "a heartbeat with two current tasks",
        )
        ttl = await services.client.pttl(key)
        assert 0 < ttl <= services.heartbeats.ttl_ms
        assert busy.worker_id == "beater"
        assert busy.host == socket.gethostname()
        assert busy.pid == os.getpid()
        assert 0 < busy.started_at <= time.time()
        assert sorted(busy.current) == sorted(ids)
        assert busy.rss_bytes > 0
        assert busy.cpu_percent >= 0.0
        assert busy.concurrency == worker.concurrency
        alive = await services.heartbeats.alive()
        assert [i.worker_id for i in alive] == ["beater"]
        idle = await wait_for(
            lambda: beat_where(lambda i: i.done == 2),
            "a heartbeat counting two tasks done",
        )
        assert idle.current == []
        assert idle.failed == 0
        results = [r.result for r in await services.queue.get_many(ids)]
        used = sum(r.total_tokens for r in results if r is not None)
        assert idle.tokens == used > 0
    assert await services.client.exists(key) == 0, "record left after stop"


# Shutdown --------------------------------------------------------------------


async def test_stop_lets_short_tasks_finish(services: Services) -> None:
    """Tasks that end within the grace period complete; nothing is handed back."""
    tasks = [make_task() for _ in range(3)]
    ids = [t.id for t in tasks]
    await services.enqueue(tasks)
    worker = make_worker(services, SimulatedExecutor(0.5, 0.5), shutdown_grace=10.0)
    job = asyncio.create_task(worker.run())
    try:
        await wait_for(lambda: len(worker.running) == 3, "three tasks running")
        worker.stop()
        assert await finish(job, timeout=15), "the worker did not stop"
    finally:
        worker.stop()
        await finish(job, timeout=15)
    assert await all_in_state(services, ids, "done")
    assert "handed_back" not in kinds(await events_of(services.queue))


async def test_stop_hands_back_tasks_longer_than_grace(services: Services) -> None:
    """Past the grace, running tasks go back unspent; another worker runs them."""
    tasks = [make_task() for _ in range(2)]
    ids = [t.id for t in tasks]
    await services.enqueue(tasks)
    worker = make_worker(
        services, SimulatedExecutor(60.0, 60.0), shutdown_grace=0.3, worker_id="slow"
    )
    job = asyncio.create_task(worker.run())
    try:
        await wait_for(lambda: len(worker.running) == 2, "two tasks running")
        worker.stop()
        assert await finish(job, timeout=10), "the worker did not stop"
    finally:
        worker.stop()
        await finish(job, timeout=10)
    for record in await services.queue.get_many(ids):
        assert record is not None
        assert record.state == "pending"
        assert record.attempts == 0
    depths = await services.queue.depths()
    assert depths.pending["high"] == 2 and depths.in_flight == 0
    for task_id in ids:
        back = [
            e for e in await events_of(services.queue, task_id) if e.kind != "enqueued"
        ]
        assert [(e.kind, e.detail, e.attempt) for e in back] == [
            ("claimed", "", 1),
            ("handed_back", "shutdown", 0),
        ]
    async with running(make_worker(services, worker_id="fast")):
        await wait_for(lambda: all_in_state(services, ids, "done"), "tasks done")
    for record in await services.queue.get_many(ids):
        assert record is not None and record.result is not None
        assert record.attempts == 1 and record.result.attempt == 1
        assert record.result.worker == "fast"


# The suite turns warnings into errors; this one is a note on a slow stop, and
# would otherwise fail the test at 5s, the very bound it replaced.
@pytest.mark.filterwarnings(r"always:run\(\) still running:UserWarning")
async def test_stop_right_after_start_ends_the_worker(settings: Settings) -> None:
    """stop() soon after run() starts always ends run() within a bounded time.

    Each try uses fresh connections and stops the worker a few event-loop
    turns later, while its housekeeping loops make their first Redis calls.
    """
    assert settings.redis_url is not None
    for turns in range(16):
        sv = await Services.connect(settings, settings.redis_url, name="early")
        try:
            worker = make_worker(sv, worker_id=f"early-{turns}")
            job = asyncio.create_task(worker.run(), name=f"early-{turns}")
            for _ in range(turns):
                await asyncio.sleep(0)
            worker.stop()
            done, _ = await asyncio.wait({job}, timeout=5)
            if not done:
                # Slower than it should be; where everything waits says why.
                me = asyncio.current_task()
                stacks = [where(t) for t in asyncio.all_tasks() if t is not me]
                warnings.warn(
                    f"run() still running 5s after stop() ({turns} turns): "
                    + " | ".join(stacks),
                    stacklevel=1,
                )
            # The bound: 5s for the helper loops, then one heartbeat removal.
            ended = await finish(job, timeout=20)
            assert ended, f"run() hung after stop() {turns} loop turns after start"
        finally:
            await sv.close()


# Worker processes ------------------------------------------------------------


def _env(child_env: dict[str, str], **values: str) -> dict[str, str]:
    return {**child_env, **{f"CORTEX_{k.upper()}": v for k, v in values.items()}}


async def test_sigterm_hands_back_and_exits_zero(
    services: Services, child_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGTERM to ``cortex worker`` hands long tasks back unspent; exit code 0."""
    tasks = [make_task() for _ in range(2)]
    ids = [t.id for t in tasks]
    await services.enqueue(tasks)
    env = _env(child_env, shutdown_grace_seconds="0.5")
    log = tmp_path / "worker.log"
    with worker_process(env, "termed", "--latency", "60:60", log=log) as proc:
        await wait_for(lambda: all_in_state(services, ids, "running"), "claims")
        await wait_for(
            lambda: services.client.exists(services.keys.worker("termed")),
            "the worker's heartbeat",
        )
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 20)
        assert proc.returncode == 0, log.read_text()
    for record in await services.queue.get_many(ids):
        assert record is not None
        assert (record.state, record.attempts) == ("pending", 0)
    handed = [e for e in await events_of(services.queue) if e.kind == "handed_back"]
    assert sorted(e.task_id for e in handed) == sorted(ids)
    assert all(e.detail == "shutdown" and e.worker == "termed" for e in handed)
    assert await services.client.exists(services.keys.worker("termed")) == 0
    assert "Traceback" not in log.read_text()


async def test_sigkill_loses_nothing(
    services: Services, child_env: dict[str, str], tmp_path: Path
) -> None:
    """A worker killed mid-task loses nothing: the task is run again, attempt 2."""
    task = make_task()
    await services.enqueue([task])
    env = _env(child_env, lease_seconds="1")
    log = tmp_path / "worker.log"
    with worker_process(env, "doomed", "--latency", "60:60", log=log) as proc:
        await wait_for(lambda: all_in_state(services, [task.id], "running"), "claim")
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)
        assert proc.returncode == -signal.SIGKILL
    assert await state_of(services, task.id) == "running"
    rescuer = make_worker(services, worker_id="rescuer", reap_interval=0.2)
    async with running(rescuer):
        await wait_for(lambda: all_in_state(services, [task.id], "done"), "done")
    record = await services.queue.get(task.id)
    assert record.attempts == 2
    assert record.result is not None
    assert (record.result.attempt, record.result.worker) == (2, "rescuer")
    events = [e for e in await events_of(services.queue, task.id)]
    assert [(e.kind, e.worker, e.attempt) for e in events] == [
        ("enqueued", "", 0),
        ("claimed", "doomed", 1),
        ("expired", "doomed", 1),
        ("claimed", "rescuer", 2),
        ("done", "rescuer", 2),
    ]
    depths = await services.queue.depths()
    assert (depths.total_pending, depths.in_flight, depths.dead) == (0, 0, 0)
    assert json.loads(record.payload)["id"] == task.id


async def test_audit_trail_holds_each_state_change_with_task_and_result(
    services: Services,
) -> None:
    """The audit trail has enqueued (with the task), claimed and done (with
    the result) for a task a worker ran."""
    task = make_task("security")
    await services.enqueue([task])
    worker = make_worker(services)
    async with running(worker):
        await wait_for(
            lambda: all_in_state(services, [task.id], "done"), "the task to be done"
        )
    assert services.audit.flush(timeout=10)
    history = services.audit.history(task.id)
    assert [r["kind"] for r in history] == ["enqueued", "claimed", "done"]
    assert history[0]["task"]["query"] == task.query
    assert history[0]["task"]["priority"] == "high"
    result = history[2]["result"]
    assert result["simulated"] is True
    assert result["input_tokens"] > 0 and result["output_tokens"] > 0
