"""What a worker does after a crash or an outage took something from it: a
task a dead worker held runs alone next time; a claim whose reply was lost
is handed back with its attempt unspent."""

from __future__ import annotations

from helpers import events_of, make_task, make_worker, running, wait_for

from cortex_core.executor import SimulatedExecutor
from cortex_core.system import Services


async def _all_done(services: Services, ids: list[str]) -> bool:
    records = await services.queue.get_many(ids)
    return all(r is not None and r.state == "done" for r in records)


async def test_a_crash_suspect_runs_alone(services: Services) -> None:
    """A task whose worker died holding it is claimed with its crash count;
    the next worker runs it with nothing else in flight, and claims the rest
    only after it."""
    suspect = make_task()
    others = [make_task() for _ in range(12)]
    await services.enqueue([suspect])
    claim = await services.queue.claim("gone", 30_000)
    assert claim is not None and claim.crashes == 0
    out = await services.queue.worker_crashed("gone", "worker_crash (test)")
    assert out.returned == [suspect.id]
    await services.enqueue(others)
    ids = [suspect.id] + [t.id for t in others]
    worker = make_worker(
        services, SimulatedExecutor(0.05, 0.1), worker_id="w", concurrency=8
    )
    async with running(worker):
        await wait_for(lambda: _all_done(services, ids), "every task done")
    events = [e for e in await events_of(services.queue) if e.worker == "w"]
    start = next(i for i, e in enumerate(events) if e.task_id == suspect.id)
    end = next(
        i for i, e in enumerate(events) if e.task_id == suspect.id and e.kind == "done"
    )
    assert [e.task_id for e in events[start : end + 1]] == [suspect.id] * 2
    record = await services.queue.get(suspect.id)
    assert (record.attempts, record.state) == (2, "done")


async def test_a_claim_whose_reply_was_lost_is_handed_back(
    services: Services,
) -> None:
    """Redis gave a task to this worker's name, but the worker never heard
    (the outage swallowed the reply): after the outage it hands the task back
    without spending the attempt, and leaves its own running tasks alone."""
    lost = make_task()
    await services.enqueue([lost])
    assert await services.queue.claim("w", 30_000) is not None
    worker = make_worker(services, worker_id="w")
    await worker._recover_lost_claims()
    record = await services.queue.get(lost.id)
    assert (record.state, record.attempts) == ("pending", 0)
    handed = [e for e in await events_of(services.queue, lost.id)][-1]
    assert (handed.kind, handed.detail) == ("handed_back", "claim reply lost")
    async with running(worker):
        await wait_for(lambda: _all_done(services, [lost.id]), "the task done")
    assert (await services.queue.get(lost.id)).attempts == 1


async def test_claim_many_keeps_priority_order_and_claims_a_suspect_alone(
    services: Services,
) -> None:
    """One call takes several tasks in the order single claims would; a crash
    suspect is never claimed beside others: it ends a batch or starts one."""
    low, crit = make_task("cicd", "low"), make_task("cicd", "critical")
    high = make_task("cicd", "high")
    await services.enqueue([low, crit, high])
    claims = await services.queue.claim_many("w", 30_000, 5)
    assert [c.task_id for c in claims] == [crit.id, high.id, low.id]
    out = await services.queue.worker_crashed("w", "worker_crash (test)")
    assert sorted(out.returned) == sorted([crit.id, high.id, low.id])
    fresh = make_task("cicd", "critical")
    await services.enqueue([fresh])
    # Queues now: critical [crit (suspect), fresh], high [high], low [low].
    first = await services.queue.claim_many("w2", 30_000, 8)
    assert [(c.task_id, c.crashes) for c in first] == [(crit.id, 1)]
    second = await services.queue.claim_many("w2", 30_000, 8)
    assert [c.task_id for c in second] == [fresh.id]
    third = await services.queue.claim_many("w2", 30_000, 8)
    assert [c.task_id for c in third] == [high.id]
