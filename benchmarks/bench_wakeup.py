"""Enqueue-to-claim latency with an idle worker blocked on the wake list,
against a worker that polls every 50 ms (the baseline a sleep loop gives)."""

from __future__ import annotations

import asyncio
import time

from benchmarks.common import bench_services, percentile, private_redis
from cortex_core.models import Priority, Task
from cortex_core.queue import TaskQueue

SAMPLES = 1000
POLL_SECONDS = 0.05


async def _blocking_claimer(queue: TaskQueue, got: asyncio.Queue[float]) -> None:
    while True:
        claim = await queue.claim("bench", 30_000)
        if claim is None:
            await queue.wait_for_work(timeout=1.0)
            continue
        await got.put(time.perf_counter())


async def _polling_claimer(queue: TaskQueue, got: asyncio.Queue[float]) -> None:
    while True:
        claim = await queue.claim("bench", 30_000)
        if claim is None:
            await asyncio.sleep(POLL_SECONDS)
            continue
        await got.put(time.perf_counter())


async def _measure(polling: bool) -> list[float]:
    with private_redis() as (tmp, url):
        async with (
            bench_services(tmp, url) as producer,
            bench_services(tmp, url) as consumer,
        ):
            consumer.queue.keys = producer.queue.keys
            got: asyncio.Queue[float] = asyncio.Queue()
            queue = TaskQueue(consumer.client, producer.keys)
            claimer = _polling_claimer if polling else _blocking_claimer
            job = asyncio.create_task(claimer(queue, got))
            await asyncio.sleep(0.2)
            latencies = []
            for _ in range(SAMPLES):
                task = Task.create(query="x", category="bench", priority=Priority.LOW)
                sent = time.perf_counter()
                await producer.queue.enqueue(task)
                latencies.append((await got.get()) - sent)
                await asyncio.sleep(0.005)
            job.cancel()
            return latencies


def main() -> None:
    blocking = asyncio.run(_measure(polling=False))
    polling = asyncio.run(_measure(polling=True))
    print(f"wake-up benchmark: {SAMPLES} enqueues to an idle worker")
    for name, lat in (("blocking (cortex)", blocking), ("50 ms poll", polling)):
        print(
            f"  {name:<18} p50 {percentile(lat, 50) * 1000:6.2f} ms   "
            f"p99 {percentile(lat, 99) * 1000:6.2f} ms"
        )
    print(
        "  p50 ratio poll/blocking "
        f"{percentile(polling, 50) / percentile(blocking, 50):.1f}x"
        "  (aim: blocking p99 under 5 ms)"
    )


if __name__ == "__main__":
    main()
