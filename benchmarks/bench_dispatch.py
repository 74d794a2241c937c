"""Enqueue and dispatch rates with the audit trail on, against the same work
with it off, and a bare redis-py pipelined RPUSH of the same payloads.

The ratio "audit on / audit off" shows whether the trail limits the speed.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from benchmarks.common import bench_services, median, private_redis
from cortex_core.executor import Execution
from cortex_core.models import Priority, Task
from cortex_core.system import Services
from cortex_core.worker import Worker

TASKS = 2000
BATCH = 100
ROUNDS = 3


class NoOpExecutor:
    """Answers at once with fixed usage: dispatch cost without a model."""

    model = "noop"
    simulated = True

    def estimate(self, task: Task) -> tuple[int, int]:
        return 10, 10

    async def run(self, task: Task) -> Execution:
        return Execution("ok", 10, 10, self.model, True)


def bench_tasks(n: int) -> list[Task]:
    """``n`` medium tasks of a 300-byte query, as every dispatch bench uses."""
    return [
        Task.create(query="x" * 300, category="bench", priority=Priority.MEDIUM)
        for _ in range(n)
    ]


async def _enqueue(sv: Services, audit: bool) -> float:
    tasks = bench_tasks(TASKS)
    started = time.perf_counter()
    for i in range(0, TASKS, BATCH):
        chunk = tasks[i : i + BATCH]
        if audit:
            await sv.enqueue(chunk)
        else:
            await sv.queue.enqueue_many(chunk)
    sv.audit.flush()
    return TASKS / (time.perf_counter() - started)


async def _bare_pipeline(sv: Services) -> float:
    payloads = [t.to_json() for t in bench_tasks(TASKS)]
    key = sv.keys.key("bare")
    started = time.perf_counter()
    for i in range(0, TASKS, BATCH):
        async with sv.client.pipeline(transaction=False) as pipe:
            for p in payloads[i : i + BATCH]:
                pipe.rpush(key, p)
            await pipe.execute()
    rate = TASKS / (time.perf_counter() - started)
    await sv.client.delete(key)
    return rate


async def dispatch_rate(sv: Services, *, audit: bool = True) -> float:
    """The queue holds TASKS tasks; one worker (8 at once) runs them all."""
    worker = Worker(
        worker_id="bench",
        queue=sv.queue,
        limiter=sv.limiter,
        executor=NoOpExecutor(),
        heartbeats=sv.heartbeats,
        audit=sv.audit if audit else None,
        concurrency=8,
    )
    started = time.perf_counter()
    runner = asyncio.create_task(worker.run())
    while worker.info.done < TASKS:
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    worker.stop()
    await runner
    assert sv.audit.flush()
    return TASKS / elapsed


async def _round(tmp: Path, url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    async with bench_services(tmp, url) as sv:
        out["bare pipeline"] = await _bare_pipeline(sv)
    for audit in (False, True):
        async with bench_services(tmp, url) as sv:
            out[f"enqueue, audit {'on' if audit else 'off'}"] = await _enqueue(
                sv, audit
            )
        async with bench_services(tmp, url) as sv:
            await sv.queue.enqueue_many(bench_tasks(TASKS))
            out[f"dispatch, audit {'on' if audit else 'off'}"] = await dispatch_rate(
                sv, audit=audit
            )
    return out


def main() -> None:
    with private_redis() as (tmp, url):
        asyncio.run(_round(tmp, url))  # warm-up, not counted
        rounds = [asyncio.run(_round(tmp, url)) for _ in range(ROUNDS)]
    med = {k: median([r[k] for r in rounds]) for k in rounds[0]}
    print(
        f"dispatch benchmark: {TASKS} tasks, batches of {BATCH}, "
        f"median of {ROUNDS} rounds after a warm-up"
    )
    for name, rate in med.items():
        print(f"  {name:<22} {rate:>9,.0f} tasks/s")
    print(
        "  enqueue audit on/off   "
        f"{med['enqueue, audit on'] / med['enqueue, audit off']:.2f}x"
    )
    print(
        "  enqueue / bare RPUSH   "
        f"{med['enqueue, audit on'] / med['bare pipeline']:.2f}x"
    )
    print(
        "  dispatch audit on/off  "
        f"{med['dispatch, audit on'] / med['dispatch, audit off']:.2f}x"
    )


if __name__ == "__main__":
    main()
