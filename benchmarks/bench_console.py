"""The console's refresh, measured through the path it takes in cortex_core
(``ControlPlane.snapshot`` with the log the dashboard asks for): Redis round
trips and milliseconds per refresh with an empty system (the baseline) and
with 100,000 tasks pending and 10,000 events in the log, and the CPU that a
refresh once a second costs this process.

Round trips are counted at the socket: each ``send_packed_command`` of a
connection is one request (a pipeline is one).
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import time
from pathlib import Path
from typing import Any

from redis.asyncio.connection import AbstractConnection

from benchmarks.common import bench_services, private_redis
from cortex_core.backends.local import LocalBackend
from cortex_core.heartbeat import WorkerInfo
from cortex_core.models import PRIORITIES, Task
from cortex_core.system import ControlPlane, Services

PENDING = 100_000
LOG = 10_000
#: What the dashboard asks for (cortex_tui.screens.dashboard.LOG_LIMIT).
LOG_LIMIT = 200
SAMPLES = 50
CPU_SECONDS = 20


def _count_round_trips(sv: Services) -> list[int]:
    """Make the connections of ``sv`` count their requests (this process
    runs nothing else that talks to Redis)."""
    counter = [0]
    cls: type[AbstractConnection] = sv.client.connection_pool.connection_class
    send = cls.send_packed_command

    async def counting(
        self: AbstractConnection, command: Any, check_health: bool = True
    ) -> None:
        counter[0] += 1
        await send(self, command, check_health)

    cls.send_packed_command = counting  # type: ignore[method-assign]
    return counter


async def _fill(sv: Services) -> None:
    batch: list[Task] = []
    for i in range(PENDING):
        batch.append(
            Task.create(
                query="Check pod status for the cicd domain.",
                category="cicd",
                priority=PRIORITIES[i % 4],
            )
        )
        if len(batch) == 1000:
            await sv.queue.enqueue_many(batch)
            batch = []
    for w in range(4):
        await sv.heartbeats.beat(
            WorkerInfo(
                worker_id=f"local-{w + 1}",
                host=socket.gethostname(),
                pid=os.getpid(),
                started_at=time.time(),
            )
        )


async def _measure(sv: Services) -> dict[str, float]:
    backend = LocalBackend(
        sv.settings, redis_url=sv.url, client=sv.client, keys=sv.keys
    )
    control = ControlPlane(sv, backend)
    await control.snapshot(LOG_LIMIT)
    counter = _count_round_trips(sv)
    times, trips = [], []
    for _ in range(SAMPLES):
        before = counter[0]
        started = time.perf_counter()
        snap = await control.snapshot(LOG_LIMIT)
        times.append(time.perf_counter() - started)
        trips.append(counter[0] - before)
    depth = snap.queues.total_pending
    cpu_before = time.process_time()
    wall_before = time.monotonic()
    for _ in range(CPU_SECONDS):
        await control.snapshot(LOG_LIMIT)
        await asyncio.sleep(1.0)
    cpu = (time.process_time() - cpu_before) / (time.monotonic() - wall_before)
    events = await sv.client.xlen(sv.keys.events)
    return {
        "pending": depth,
        "events": events,
        "round trips": statistics.median(trips),
        "max round trips": max(trips),
        "ms": statistics.median(times) * 1000,
        "cpu %": cpu * 100,
    }


async def _run(tmp: Path, url: str) -> tuple[dict[str, float], dict[str, float]]:
    async with bench_services(tmp, url) as sv:
        empty = await _measure(sv)
    async with bench_services(tmp, url) as sv:
        sv.queue.events_maxlen = LOG
        await _fill(sv)
        full = await _measure(sv)
    return empty, full


def main() -> None:
    with private_redis() as (tmp, url):
        empty, full = asyncio.run(_run(tmp, url))
    print(
        f"console refresh (ControlPlane.snapshot, log of {LOG_LIMIT}), median of "
        f"{SAMPLES}; CPU over {CPU_SECONDS} refreshes 1 s apart"
    )
    for name, m in (("empty", empty), ("backlog", full)):
        print(
            f"  {name:<8} {int(m['pending']):>7,} pending {int(m['events']):>6,} "
            f"events: {m['round trips']:.0f} round trips (max "
            f"{m['max round trips']:.0f}), {m['ms']:.2f} ms, "
            f"CPU {m['cpu %']:.2f}% of a core"
        )
    print(
        f"  backlog / empty: {full['ms'] / empty['ms']:.2f}x the time, "
        f"{full['round trips'] / empty['round trips']:.2f}x the round trips "
        "(aim: at most 5 round trips, under 5% of a core)"
    )


if __name__ == "__main__":
    main()
