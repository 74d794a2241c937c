"""Shared helpers for the worker, process, CLI and backend tests.

Every wait here is bounded: a helper polls until its condition holds or its
deadline passes, then fails the test saying what it waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil

from cortex_core.executor import Execution, Executor, SimulatedExecutor
from cortex_core.models import Priority, Task
from cortex_core.queue import Event, TaskQueue
from cortex_core.system import Services
from cortex_core.worker import Worker

_T = TypeVar("_T")

#: The longest any single condition is waited for.
DEADLINE = 20.0

QUERY = "Check pod status for the {category} domain."


async def wait_for(
    check: Callable[[], Awaitable[_T] | _T],
    what: str,
    *,
    timeout: float = DEADLINE,
    interval: float = 0.05,
) -> _T:
    """Poll ``check`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


def wait_for_sync(
    check: Callable[[], _T], what: str, *, timeout: float = DEADLINE
) -> _T:
    """Poll a synchronous ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def make_task(
    category: str = "cicd",
    priority: Priority | str = Priority.HIGH,
    *,
    max_attempts: int = 3,
) -> Task:
    return Task.create(
        query=QUERY.format(category=category),
        category=category,
        priority=priority,
        max_attempts=max_attempts,
    )


def make_worker(
    services: Services,
    executor: Executor | None = None,
    *,
    worker_id: str = "test-worker",
    **options: Any,
) -> Worker:
    """A worker on the test's Redis and namespace (fast simulated model)."""
    return Worker(
        worker_id=worker_id,
        queue=services.queue,
        limiter=services.limiter,
        executor=executor or SimulatedExecutor(0.01, 0.02),
        heartbeats=services.heartbeats,
        audit=services.audit,
        **options,
    )


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``worker`` in the background; stop it (bounded) on the way out."""
    job = asyncio.create_task(worker.run(), name=f"worker-{worker.worker_id}")
    try:
        yield job
    finally:
        worker.stop()
        await finish(job, timeout=worker.shutdown_grace + 10)


async def finish(job: asyncio.Task[Any], *, timeout: float) -> bool:
    """Wait for ``job``; cancel it if it does not end in time. True if it ended."""
    done, _ = await asyncio.wait({job}, timeout=timeout)
    if done:
        if not job.cancelled():
            job.exception()  # retrieved, so asyncio does not log it again
        return True
    for _ in range(5):
        job.cancel()
        done, _ = await asyncio.wait({job}, timeout=2)
        if done:
            break
    return False


async def events_of(queue: TaskQueue, task_id: str | None = None) -> list[Event]:
    """Every event in the stream, oldest first, optionally of one task."""
    events = await queue.events(after="0-0", count=100_000)
    return [e for e in events if task_id is None or e.task_id == task_id]


def kinds(events: Iterable[Event]) -> list[str]:
    return [e.kind for e in events]


class RaisingExecutor:
    """An executor whose every call fails with ``error``; counts its calls."""

    model = "raising"
    simulated = True
    manages_budget = False

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls = 0
        self.waiting: dict[str, float] = {}

    def estimate(self, task: Task) -> tuple[int, int]:
        return 10, 10

    async def run(self, task: Task) -> Execution:
        self.calls += 1
        await asyncio.sleep(0)
        raise self.error


# Processes -------------------------------------------------------------------


def cortex_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "cortex_core.cli", *args]


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run ``cortex ARGS`` to completion (bounded) and capture its output."""
    return subprocess.run(
        cortex_command(*args),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@contextlib.contextmanager
def worker_process(
    env: dict[str, str], name: str, *args: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A ``cortex worker`` subprocess, killed on the way out if still alive."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cortex_command("worker", "--name", name, *args),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(10)


def processes_under(path: Path) -> list[psutil.Process]:
    """Live processes that belong to the data folder ``path``.

    That is: its path is on their command line, they run in it, or they were
    given it as ``CORTEX_DATA_DIR`` (worker processes). redis-server rewrites
    its command line to ``redis-server host:port``, so its working directory
    (the data folder) is what names it.
    """
    text = str(Path(path).resolve())

    def under(value: str) -> bool:
        if not value:
            return False
        value = str(Path(value).resolve())
        return value == text or value.startswith(text + os.sep)

    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(proc.cmdline())
            cwd = proc.cwd()
            data_dir = proc.environ().get("CORTEX_DATA_DIR", "")
        except (psutil.Error, OSError):
            continue
        if text in cmdline or under(cwd) or under(data_dir):
            found.append(proc)
    return found


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
