"""The task queue against a real Redis: priority, leases, dead letters, events."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
import redis.asyncio as aioredis
from helpers import DEADLINE

from cortex_core import connection
from cortex_core.errors import InvalidTransition, TaskValidationError, UnknownTask
from cortex_core.keys import Keyspace
from cortex_core.models import PRIORITIES, Priority, Task, TaskResult
from cortex_core.queue import Claim, TaskQueue
from cortex_core.system import Services

LONG_LEASE_MS = 30_000
SHORT_LEASE_MS = 50


def make_task(priority: Priority | str = "medium", **changes: Any) -> Task:
    values: dict[str, Any] = {
        "query": "Check pod status in the security domain.",
        "category": "security",
        "priority": priority,
    }
    values.update(changes)
    return Task.create(**values)


def make_result(claim: Claim, worker: str, output: str = "") -> TaskResult:
    return TaskResult(
        task_id=claim.task_id,
        ok=True,
        output=output or f"answer from {worker}",
        model="simulated",
        simulated=True,
        input_tokens=100,
        output_tokens=30,
        worker=worker,
        attempt=claim.attempt,
    )


async def server_ms(client: aioredis.Redis) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def wait_past(client: aioredis.Redis, deadline_ms: int) -> None:
    """Sleep until the server clock has passed ``deadline_ms``."""
    while await server_ms(client) <= deadline_ms:
        await asyncio.sleep(0.01)


async def claim_all(queue: TaskQueue, worker: str = "w1") -> list[Claim]:
    claims = []
    while (claim := await queue.claim(worker, LONG_LEASE_MS)) is not None:
        claims.append(claim)
    return claims


async def expire_and_reap(queue: TaskQueue, claim: Claim) -> tuple[list, list]:
    await wait_past(queue.client, claim.deadline_ms)
    reaped = await queue.reap()
    return reaped.returned, reaped.dead


@pytest.fixture
async def other_queue(redis_url: str, namespace: str) -> AsyncIterator[TaskQueue]:
    """A second queue on its own connection, as another process would hold."""
    client = connection.connect(redis_url, name="test-other")
    yield TaskQueue(client, Keyspace(namespace))
    await client.aclose()


@pytest.fixture
def queue(services: Services) -> TaskQueue:
    return services.queue


# Priority and order ----------------------------------------------------------


async def test_strict_priority_between_levels(queue: TaskQueue) -> None:
    """Claims take critical, then high, medium, low, whatever the enqueue order."""
    order = ["low", "medium", "high", "critical", "low", "critical", "medium", "high"]
    tasks = [make_task(p) for p in order]
    for task in tasks:
        await queue.enqueue(task)
    claims = await claim_all(queue)
    expected = [t.id for p in PRIORITIES for t in tasks if t.priority == p]
    assert [c.task_id for c in claims] == expected
    assert [c.priority for c in claims] == sorted(
        (t.priority for t in tasks), key=lambda p: p.rank
    )


async def test_fifo_within_one_level(queue: TaskQueue) -> None:
    """Tasks of one priority are claimed in the order they were enqueued."""
    tasks = [make_task("medium") for _ in range(12)]
    await queue.enqueue_many(tasks[:6])
    for task in tasks[6:]:
        await queue.enqueue(task)
    assert [c.task_id for c in await claim_all(queue)] == [t.id for t in tasks]


async def test_claim_on_empty_queue_is_none(queue: TaskQueue) -> None:
    """Nothing to claim gives None, not an error."""
    assert await queue.claim("w1", LONG_LEASE_MS) is None


# Leases --------------------------------------------------------------------


async def test_claim_moves_into_inflight_with_server_clock_deadline(
    queue: TaskQueue, services: Services
) -> None:
    """A claim puts the task in flight with deadline = server time + lease."""
    task = make_task()
    await queue.enqueue(task)
    before = await server_ms(services.client)
    claim = await queue.claim("w1", 5000)
    after = await server_ms(services.client)
    assert claim is not None
    assert claim.task_id == task.id
    assert claim.attempt == 1
    score = await services.client.zscore(services.keys.inflight, task.id)
    assert int(score) == claim.deadline_ms
    assert before + 5000 <= claim.deadline_ms <= after + 5000
    record = await queue.get(task.id)
    assert record.state == "running"
    assert record.worker == "w1"
    depths = await queue.depths()
    assert depths.in_flight == 1
    assert sum(depths.pending.values()) == 0


async def test_renew_extends_deadline_and_prevents_reaping(
    queue: TaskQueue, services: Services
) -> None:
    """A renewed lease outlives its first deadline and is not reaped."""
    await queue.enqueue(make_task())
    claim = await queue.claim("w1", 200)
    assert claim is not None
    assert await queue.renew([claim], 10_000) == [True]
    score = await services.client.zscore(services.keys.inflight, claim.task_id)
    assert int(score) > claim.deadline_ms
    await wait_past(services.client, claim.deadline_ms)
    reaped = await queue.reap()
    assert reaped.returned == [] and reaped.dead == []
    assert (await queue.get(claim.task_id)).state == "running"
    assert await queue.complete(claim, make_result(claim, "w1"))


async def test_expired_lease_returns_to_head_with_attempt_counted(
    queue: TaskQueue,
) -> None:
    """reap() puts an expired task back at the head of its queue, with a reason."""
    first, second = make_task("high"), make_task("high")
    await queue.enqueue_many([first, second])
    claim = await queue.claim("w-dead", SHORT_LEASE_MS)
    assert claim is not None and claim.task_id == first.id
    returned, dead = await expire_and_reap(queue, claim)
    assert returned == [first.id]
    assert dead == []
    record = await queue.get(first.id)
    assert record.state == "pending"
    assert record.attempts == 1
    assert "lease expired" in record.reason
    assert "w-dead" in record.reason
    again = await queue.claim("w2", LONG_LEASE_MS)
    assert again is not None
    assert again.task_id == first.id
    assert again.attempt == 2
    kinds = [e.kind for e in await queue.events(after="0-0") if e.task_id == first.id]
    assert kinds == ["enqueued", "claimed", "expired", "claimed"]


async def test_expired_last_attempt_is_dead_lettered(queue: TaskQueue) -> None:
    """After the last attempt an expired lease sends the task to dead letters."""
    task = make_task(max_attempts=2)
    await queue.enqueue(task)
    claim = await queue.claim("w1", SHORT_LEASE_MS)
    assert claim is not None
    assert await expire_and_reap(queue, claim) == ([task.id], [])
    claim = await queue.claim("w2", SHORT_LEASE_MS)
    assert claim is not None and claim.attempt == 2
    assert await expire_and_reap(queue, claim) == ([], [task.id])
    record = await queue.get(task.id)
    assert record.state == "dead"
    assert "lease expired" in record.reason
    assert "2 of 2" in record.reason
    assert await queue.dead_ids() == [task.id]
    assert await queue.claim("w3", LONG_LEASE_MS) is None
    assert (await queue.depths()).in_flight == 0


async def test_reap_leaves_live_leases_alone(queue: TaskQueue) -> None:
    """reap() touches only leases whose deadline has passed."""
    await queue.enqueue(make_task())
    claim = await queue.claim("w1", LONG_LEASE_MS)
    assert claim is not None
    reaped = await queue.reap()
    assert reaped.returned == [] and reaped.dead == []
    assert (await queue.get(claim.task_id)).state == "running"


async def test_worker_that_lost_its_lease_cannot_overwrite_result(
    queue: TaskQueue,
) -> None:
    """complete() by a worker whose lease was reaped and re-claimed returns False."""
    await queue.enqueue(make_task())
    stale = await queue.claim("w-slow", SHORT_LEASE_MS)
    assert stale is not None
    assert (await expire_and_reap(queue, stale))[0] == [stale.task_id]
    holder = await queue.claim("w-holder", LONG_LEASE_MS)
    assert holder is not None and holder.task_id == stale.task_id
    assert await queue.complete(holder, make_result(holder, "w-holder"))
    assert not await queue.complete(stale, make_result(stale, "w-slow"))
    record = await queue.get(holder.task_id)
    assert record.state == "done"
    assert record.result is not None
    assert record.result.worker == "w-holder"
    assert record.result.output == "answer from w-holder"


async def test_lost_lease_cannot_finish_before_the_holder(queue: TaskQueue) -> None:
    """A stale worker's complete, fail, hand_back and renew all change nothing."""
    await queue.enqueue(make_task())
    stale = await queue.claim("w-slow", SHORT_LEASE_MS)
    assert stale is not None
    await expire_and_reap(queue, stale)
    holder = await queue.claim("w-holder", LONG_LEASE_MS)
    assert holder is not None
    assert not await queue.complete(stale, make_result(stale, "w-slow"))
    assert await queue.fail(stale, "boom", retryable=False) is None
    assert not await queue.hand_back(stale, "shutdown")
    assert await queue.renew([stale, holder], LONG_LEASE_MS) == [False, True]
    record = await queue.get(holder.task_id)
    assert record.state == "running"
    assert record.worker == "w-holder"
    assert record.result is None
    assert await queue.complete(holder, make_result(holder, "w-holder"))
    assert not await queue.complete(holder, make_result(holder, "w-holder", "again"))


# Failure, hand back, requeue -------------------------------------------------


async def test_retryable_failure_retries_then_dead_letters(queue: TaskQueue) -> None:
    """fail(retryable=True) retries until max_attempts, then dead-letters."""
    task = make_task(max_attempts=3)
    await queue.enqueue(task)
    outcomes, attempts = [], []
    for n in range(3):
        claim = await queue.claim("w1", LONG_LEASE_MS)
        assert claim is not None and claim.task_id == task.id
        attempts.append(claim.attempt)
        outcomes.append(await queue.fail(claim, f"rate limited #{n}", retryable=True))
    assert attempts == [1, 2, 3]
    assert outcomes == ["retry", "retry", "dead"]
    record = await queue.get(task.id)
    assert record.state == "dead"
    assert record.reason == "rate limited #2"
    assert await queue.dead_ids() == [task.id]
    assert await queue.claim("w1", LONG_LEASE_MS) is None


async def test_non_retryable_failure_dead_letters_at_once(queue: TaskQueue) -> None:
    """fail(retryable=False) dead-letters on the first attempt, keeping the reason."""
    task = make_task(max_attempts=5)
    await queue.enqueue(task)
    claim = await queue.claim("w1", LONG_LEASE_MS)
    assert claim is not None
    assert await queue.fail(claim, "tool refused: forbidden", retryable=False) == (
        "dead"
    )
    record = await queue.get(task.id)
    assert record.state == "dead"
    assert record.attempts == 1
    assert record.reason == "tool refused: forbidden"
    assert await queue.dead_ids() == [task.id]
    depths = await queue.depths()
    assert depths.in_flight == 0 and depths.dead == 1


async def test_hand_back_returns_to_head_without_spending_attempt(
    queue: TaskQueue,
) -> None:
    """hand_back puts the task first in its queue with its attempt unspent."""
    first, second = make_task("low"), make_task("low")
    await queue.enqueue_many([first, second])
    claim = await queue.claim("w1", LONG_LEASE_MS)
    assert claim is not None and claim.task_id == first.id
    assert await queue.hand_back(claim, "worker shutting down")
    record = await queue.get(first.id)
    assert record.state == "pending"
    assert record.attempts == 0
    assert (await queue.depths()).in_flight == 0
    again = await queue.claim("w2", LONG_LEASE_MS)
    assert again is not None
    assert again.task_id == first.id
    assert again.attempt == 1


async def test_requeue_from_dead_resets_attempts(queue: TaskQueue) -> None:
    """requeue moves a dead task back with zero attempts; it can be claimed again."""
    task = make_task(max_attempts=1)
    await queue.enqueue(task)
    claim = await queue.claim("w1", LONG_LEASE_MS)
    assert claim is not None
    assert await queue.fail(claim, "boom", retryable=True) == "dead"
    await queue.requeue(task.id)
    record = await queue.get(task.id)
    assert record.state == "pending"
    assert record.attempts == 0
    assert await queue.dead_ids() == []
    again = await queue.claim("w2", LONG_LEASE_MS)
    assert again is not None
    assert again.task_id == task.id
    assert again.attempt == 1
    assert await queue.complete(again, make_result(again, "w2"))


async def test_requeue_unknown_task_raises(queue: TaskQueue) -> None:
    """requeue of an id that names no task raises UnknownTask."""
    with pytest.raises(UnknownTask):
        await queue.requeue("0123456789abcdef01234567")


async def test_requeue_of_live_task_is_invalid(queue: TaskQueue) -> None:
    """requeue of a pending or running task raises InvalidTransition."""
    task = make_task()
    await queue.enqueue(task)
    with pytest.raises(InvalidTransition, match="pending"):
        await queue.requeue(task.id)
    assert await queue.claim("w1", LONG_LEASE_MS) is not None
    with pytest.raises(InvalidTransition, match="running"):
        await queue.requeue(task.id)


# Pause and resume -------------------------------------------------------------


async def test_pause_all_stops_claims_and_resume_restores(queue: TaskQueue) -> None:
    """With everything paused nothing is claimed; resume makes it claimable."""
    task = make_task("critical")
    await queue.enqueue(task)
    await queue.pause()
    assert await queue.claim("w1", LONG_LEASE_MS) is None
    assert "all" in (await queue.depths()).paused
    await queue.resume()
    assert (await queue.depths()).paused == frozenset()
    claim = await queue.claim("w1", LONG_LEASE_MS)
    assert claim is not None and claim.task_id == task.id


async def test_pause_one_priority_skips_only_that_level(queue: TaskQueue) -> None:
    """Pausing one priority leaves the others claimable."""
    high, low = make_task("high"), make_task("low")
    await queue.enqueue_many([high, low])
    await queue.pause(Priority.HIGH)
    claim = await queue.claim("w1", LONG_LEASE_MS)
    assert claim is not None and claim.task_id == low.id
    assert await queue.claim("w1", LONG_LEASE_MS) is None
    assert (await queue.depths()).pending[Priority.HIGH] == 1
    await queue.resume(Priority.HIGH)
    claim = await queue.claim("w1", LONG_LEASE_MS)
    assert claim is not None and claim.task_id == high.id


async def test_resume_all_ends_every_pause(queue: TaskQueue) -> None:
    """'Resume everything' ends the pauses of single priorities and a drain
    too; an operator who resumed all must not find high work still held."""
    await queue.pause(Priority.HIGH)
    await queue.pause(Priority.LOW)
    await queue.drain()
    await queue.pause()
    assert (await queue.depths()).paused == {"high", "low", "drain", "all"}
    await queue.resume()
    assert (await queue.depths()).paused == frozenset()
    task = make_task("high")
    await queue.enqueue(task)
    claim = await queue.claim("w1", LONG_LEASE_MS)
    assert claim is not None and claim.task_id == task.id


# Idempotency ---------------------------------------------------------------------


async def test_idempotency_key_returns_first_id_and_creates_nothing(
    queue: TaskQueue, services: Services
) -> None:
    """A second enqueue with the same key returns the first id and adds nothing."""
    first = make_task(idempotency_key="nightly-scan-2024-06-01")
    second = make_task("critical", idempotency_key="nightly-scan-2024-06-01")
    assert await queue.enqueue(first) == (first.id, True)
    assert await queue.enqueue(second) == (first.id, False)
    assert await services.client.exists(services.keys.task(second.id)) == 0
    depths = await queue.depths()
    assert depths.pending[Priority.MEDIUM] == 1
    assert depths.pending[Priority.CRITICAL] == 0
    enqueued = [e for e in await queue.events(after="0-0") if e.kind == "enqueued"]
    assert [e.task_id for e in enqueued] == [first.id]


async def test_same_task_enqueued_twice_is_stored_once(queue: TaskQueue) -> None:
    """Enqueueing the very same task again reports it as not new."""
    task = make_task()
    assert await queue.enqueue_many([task, task]) == [(task.id, True), (task.id, False)]
    assert len(await claim_all(queue)) == 1


# Payloads and malformed data ---------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "Check pods 🚀🔥 and report 👩\u200d💻 status 🇩🇪",
        "تحقق من حالة الحاويات في مجال الأمان",
        "בדוק את מצב הפודים בתחום האבטחה",
        "mixed العربية and עברית and ascii",
        "before\x00after\x00",
        "\u202eright-to-left override\u202c and \ufeffBOM",
    ],
)
async def test_unicode_and_nul_round_trip_byte_for_byte(
    queue: TaskQueue, query: str
) -> None:
    """Emoji, RTL text and NUL survive enqueue, claim and from_json byte for byte."""
    task = make_task(query=query)
    await queue.enqueue(task)
    claim = await queue.claim("w1", LONG_LEASE_MS)
    assert claim is not None
    assert claim.payload == task.to_json()
    back = Task.from_json(claim.payload)
    assert back == task
    assert back.query.encode("utf-8") == query.encode("utf-8")


async def test_garbage_queue_entry_is_dead_lettered_by_claim(
    queue: TaskQueue, raw_redis: aioredis.Redis, services: Services
) -> None:
    """A pending entry that names no task is dead-lettered with a decode: reason."""
    garbage = b"\x00not a task id \xff"
    after = make_task("medium")
    await raw_redis.rpush(services.keys.pending("medium"), garbage)
    await queue.enqueue(after)
    claim = await queue.claim("w1", LONG_LEASE_MS)
    assert claim is not None and claim.task_id == after.id
    bad_id = hashlib.sha1(garbage).hexdigest()[:24]
    assert await queue.dead_ids() == [bad_id]
    record = await queue.get(bad_id)
    assert record.state == "dead"
    assert record.reason.startswith("decode:")
    assert record.payload == garbage
    assert record.task is None


@pytest.mark.parametrize("payload", [b'{"query": "cut off', b"\xff\xfe\x00\x81"])
async def test_bad_payload_is_dead_lettered_by_worker_path(
    queue: TaskQueue, raw_redis: aioredis.Redis, services: Services, payload: bytes
) -> None:
    """A record with a payload that does not decode ends dead with a decode: reason."""
    task_id = "0123456789abcdef0123abcd"
    await raw_redis.hset(
        services.keys.task(task_id),
        mapping={
            "payload": payload,
            "state": "pending",
            "priority": "medium",
            "category": "security",
            "attempts": 0,
            "max_attempts": 3,
            "enqueued_at": await server_ms(raw_redis),
        },
    )
    await raw_redis.rpush(services.keys.pending("medium"), task_id)
    record = await queue.get(task_id)
    assert record.task is None
    assert record.decode_error is not None
    assert record.decode_error.startswith("decode:")
    claim = await queue.claim("w1", LONG_LEASE_MS)
    assert claim is not None and claim.task_id == task_id
    assert claim.payload == payload
    with pytest.raises(TaskValidationError) as info:
        Task.from_json(claim.payload)
    reason = str(info.value)
    assert reason.startswith("decode:")
    assert await queue.fail(claim, reason, retryable=False) == "dead"
    assert await queue.dead_ids() == [task_id]
    record = await queue.get(task_id)
    assert record.state == "dead"
    assert record.reason.startswith("decode:")


@pytest.mark.parametrize("bad", ["three", "inf", "nan", "1e999", "-1", "0", "0x10"])
async def test_claim_survives_record_with_non_numeric_max_attempts(
    queue: TaskQueue, raw_redis: aioredis.Redis, services: Services, bad: str
) -> None:
    """A record whose max_attempts is not a whole number from 1 is still
    claimed, with one attempt; the record says 1 so that a retryable failure
    dead-letters it instead of retrying it forever (inf)."""
    task = make_task()
    await raw_redis.hset(
        services.keys.task(task.id),
        mapping={
            "payload": task.to_json(),
            "state": "pending",
            "priority": "medium",
            "category": "security",
            "attempts": 0,
            "max_attempts": bad,
            "enqueued_at": await server_ms(raw_redis),
        },
    )
    await raw_redis.rpush(services.keys.pending("medium"), task.id)
    claim = await queue.claim("w1", LONG_LEASE_MS)
    assert claim is not None
    assert claim.task_id == task.id
    assert claim.max_attempts == 1
    assert await queue.fail(claim, "model: overloaded", retryable=True) == "dead"


# Waking, keys, events ------------------------------------------------------------


async def test_wait_for_work_wakes_on_enqueue_from_another_client(
    queue: TaskQueue, other_queue: TaskQueue
) -> None:
    """An idle waiter returns True after another client enqueues.

    True (not False) is what shows the enqueue woke it: its own timeout, far
    longer than any test waits, would return False.
    """
    waiter = asyncio.ensure_future(queue.wait_for_work(timeout=600.0))
    await asyncio.sleep(0.1)
    assert not waiter.done()
    task = make_task()
    await other_queue.enqueue(task)
    assert await asyncio.wait_for(waiter, timeout=DEADLINE) is True
    claim = await queue.claim("w1", LONG_LEASE_MS)
    assert claim is not None and claim.task_id == task.id


async def test_wait_for_work_times_out_false(queue: TaskQueue) -> None:
    """With no enqueue, wait_for_work returns False after its timeout."""
    assert await queue.wait_for_work(timeout=0.2) is False


async def test_wait_for_work_longer_than_socket_timeout_returns_false(
    queue: TaskQueue,
) -> None:
    """A wait longer than the client's command timeout still ends with False."""
    assert await queue.wait_for_work(connection.COMMAND_TIMEOUT + 1.0) is False


async def _all_keys(client: aioredis.Redis) -> set[bytes]:
    return {key async for key in client.scan_iter(count=1000)}


def _lifecycle_tasks() -> Iterable[Task]:
    yield make_task("critical", idempotency_key="key with spaces/and:colons")
    yield make_task("high")
    yield make_task("low", max_attempts=1)
    yield make_task("medium")


async def test_every_queue_key_shares_the_namespace_hash_tag(
    services: Services, raw_redis: aioredis.Redis, namespace: str
) -> None:
    """Every key written by a full task lifecycle starts with ``{namespace}:``."""
    queue = services.queue
    before = await _all_keys(raw_redis)
    tasks = list(_lifecycle_tasks())
    await services.enqueue(tasks)
    await raw_redis.rpush(services.keys.pending("low"), b"garbage")
    await queue.pause(Priority.MEDIUM)
    done = await queue.claim("w1", LONG_LEASE_MS)
    assert done is not None
    assert await queue.complete(done, make_result(done, "w1"))
    expired = await queue.claim("w1", SHORT_LEASE_MS)
    assert expired is not None
    await expire_and_reap(queue, expired)
    failed = await queue.claim("w1", LONG_LEASE_MS)
    assert failed is not None
    assert await queue.renew([failed], LONG_LEASE_MS) == [True]
    assert await queue.fail(failed, "boom", retryable=False) == "dead"
    await queue.requeue(failed.task_id)
    await queue.resume(Priority.MEDIUM)
    handed = await queue.claim("w1", LONG_LEASE_MS)
    assert handed is not None
    await queue.hand_back(handed, "shutdown")
    reservation = await services.limiter.reserve(10, 10)
    await services.limiter.settle(reservation, 5, 5)
    new_keys = await _all_keys(raw_redis) - before
    assert new_keys
    tag = f"{{{namespace}}}:".encode()
    assert sorted(k for k in new_keys if not k.startswith(tag)) == []


async def test_events_record_lifecycle_in_order(queue: TaskQueue) -> None:
    """The event stream shows enqueued, claimed, done for a task, in order."""
    task = make_task("high")
    await queue.enqueue(task)
    claim = await queue.claim("w7", LONG_LEASE_MS)
    assert claim is not None
    assert await queue.complete(claim, make_result(claim, "w7"))
    oldest_first = [e for e in await queue.events(after="0-0") if e.task_id == task.id]
    assert [e.kind for e in oldest_first] == ["enqueued", "claimed", "done"]
    assert [e.worker for e in oldest_first[1:]] == ["w7", "w7"]
    assert all(e.priority == "high" for e in oldest_first)
    newest_first = [e.kind for e in await queue.events() if e.task_id == task.id]
    assert newest_first == ["done", "claimed", "enqueued"]
    ids = [e.event_id for e in oldest_first]
    assert ids == sorted(ids, key=lambda i: tuple(int(p) for p in i.split("-")))
    assert await queue.last_event_id() == ids[-1]
