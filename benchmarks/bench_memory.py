"""Worker memory: the RSS of a ``cortex worker`` process idle (the baseline)
and with 8 and with 32 tasks running at once (the simulated model holding
each for minutes), read from the OS."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from benchmarks.common import bench_services, private_redis
from cortex_core.models import Priority, Task
from cortex_core.system import Services

LEVELS = (8, 32)
MIB = 1024 * 1024


async def _until(check: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def _rss_at(sv: Services, concurrency: int) -> tuple[int, int]:
    """(idle RSS, RSS with ``concurrency`` tasks running) of one worker."""
    env = dict(os.environ)
    env.update(sv.settings.to_env())
    env.update(
        CORTEX_SIM_LATENCY_MIN="600",
        CORTEX_SIM_LATENCY_MAX="600",
        CORTEX_SHUTDOWN_GRACE_SECONDS="0.5",
        CORTEX_LOG_LEVEL="WARNING",
    )
    name = f"mem-{concurrency}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cortex_core.cli",
            "worker",
            "--name",
            name,
            "--concurrency",
            str(concurrency),
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        handle = psutil.Process(proc.pid)

        async def beating() -> bool:
            return any(b.worker_id == name for b in await sv.heartbeats.alive())

        await _until(beating, "the worker's heartbeat")
        await asyncio.sleep(1.0)
        idle = int(handle.memory_info().rss)
        await sv.queue.enqueue_many(
            [
                Task.create(query="x" * 300, category="bench", priority=Priority.LOW)
                for _ in range(concurrency)
            ]
        )

        async def all_running() -> bool:
            return (await sv.queue.depths()).in_flight == concurrency

        await _until(all_running, f"{concurrency} tasks running")
        await asyncio.sleep(3.0)
        busy = int(handle.memory_info().rss)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return idle, busy


async def _run(tmp: Path, url: str) -> dict[int, tuple[int, int]]:
    out = {}
    for level in LEVELS:
        async with bench_services(tmp, url) as sv:
            out[level] = await _rss_at(sv, level)
    return out


def main() -> None:
    with private_redis() as (tmp, url):
        found = asyncio.run(_run(tmp, url))
    print("worker memory (RSS of one cortex worker process)")
    for level, (idle, busy) in found.items():
        print(
            f"  {level:>2} tasks at once: {busy / MIB:6.1f} MiB, idle "
            f"{idle / MIB:6.1f} MiB; per task {busy / level / MIB:5.2f} MiB "
            f"of the whole, {(busy - idle) / level / 1024:6.1f} KiB above idle "
            "(aim: under 5 MB a task at 32)"
        )


if __name__ == "__main__":
    main()
