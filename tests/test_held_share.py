"""Budget by priority at the worker: a backlog of low-priority tasks waiting
for budget in every slot does not keep a critical task out."""

from __future__ import annotations

from cortex_core.executor import SimulatedExecutor
from cortex_core.limiter import Limits, RateLimiter
from cortex_core.models import Priority, TaskState
from cortex_core.system import Services
from cortex_core.worker import Worker
from tests.helpers import make_task, running, wait_for


async def test_critical_task_runs_while_low_tasks_wait_for_budget(
    services: Services,
) -> None:
    # 1,000 tokens a minute, half of it held for critical and high: about four
    # low tasks fit, then the rest wait in the worker's two slots.
    limiter = RateLimiter(
        services.client, services.keys, Limits(tokens=1000), held_share=0.5
    )
    executor = SimulatedExecutor(0.01, 0.02)
    worker = Worker(
        worker_id="held",
        queue=services.queue,
        limiter=limiter,
        executor=executor,
        heartbeats=services.heartbeats,
        audit=services.audit,
        concurrency=2,
        shutdown_grace=0.5,
    )
    lows = [make_task("cicd", Priority.LOW) for _ in range(12)]
    await services.queue.enqueue_many(lows)
    async with running(worker):

        async def lows_blocked() -> bool:
            return len(worker.rate_limited()) == 2

        await wait_for(lows_blocked, "two low tasks waiting for budget")
        urgent = make_task("security", Priority.CRITICAL)
        await services.queue.enqueue(urgent)

        async def urgent_done() -> bool:
            record = await services.queue.get(urgent.id)
            return record.state == TaskState.DONE

        await wait_for(urgent_done, "the critical task done", timeout=10)
        records = await services.queue.get_many([t.id for t in lows])
        done = [r for r in records if r is not None and r.state == TaskState.DONE]
        assert len(done) < len(lows), "the low backlog should still be waiting"
        stats = await limiter.priority_stats()
        assert stats["critical"].waits == 0
        assert stats["low"].calls >= 1
