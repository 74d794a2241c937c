"""The local backend: real ``cortex worker`` processes, started, scaled,
restarted and stopped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator

import pytest
from helpers import make_task, pid_alive, wait_for

from cortex_core.backends.local import LocalBackend, ProcessRow
from cortex_core.config import MAX_LOCAL_WORKERS, Settings
from cortex_core.heartbeat import WorkerInfo
from cortex_core.system import ControlPlane, Services


@pytest.fixture
async def backend(
    settings: Settings, services: Services
) -> AsyncIterator[LocalBackend]:
    """A backend on the test's Redis; every process it started ends at teardown."""
    backend = LocalBackend(
        settings,
        redis_url=services.url,
        client=services.client,
        keys=services.keys,
        extra_env={"CORTEX_SHUTDOWN_GRACE_SECONDS": "0.5"},
        audit=services.audit,
    )
    yield backend
    # A process leaves ``processes`` only once it has exited; the rest are here.
    left = list(backend.processes.values())
    with contextlib.suppress(Exception):
        await backend.stop_all(grace=1)
    for proc in left:
        if proc.popen.poll() is None:
            proc.popen.kill()
        proc.popen.wait(10)


async def _beats(services: Services) -> dict[str, WorkerInfo]:
    return {i.worker_id: i for i in await services.heartbeats.alive()}


async def _beating(services: Services, names: set[str]) -> dict[str, WorkerInfo]:
    """Wait until exactly ``names`` send heartbeats."""

    async def check() -> dict[str, WorkerInfo] | None:
        beats = await _beats(services)
        return beats if set(beats) == names else None

    return await wait_for(check, f"heartbeats from {sorted(names)}")


async def test_cpu_is_measured_over_half_a_second_at_least(
    backend: LocalBackend, services: Services
) -> None:
    """No CPU % from a sample of a few milliseconds: none, then a sane one."""
    await backend.set_desired(1)
    backend.reconcile()
    (first,) = backend.rows()
    assert first.state == "running" and first.cpu_percent is None
    await _beating(services, {"local-1"})
    await asyncio.sleep(0.5)
    (row,) = backend.rows()
    assert row.cpu_percent is not None
    assert 0.0 <= row.cpu_percent <= 100.0 * (os.cpu_count() or 1)
    again = backend.rows()[0].cpu_percent
    assert again == row.cpu_percent, "a reading right after another re-sampled"


async def test_starts_workers_and_reports_them(
    backend: LocalBackend, services: Services
) -> None:
    """N desired workers are N running processes, each with pid, CPU and RSS."""
    await backend.set_desired(2)
    backend.reconcile()
    beats = await _beating(services, {"local-1", "local-2"})
    # A CPU reading needs a sample of at least half a second after the spawn.
    rows = await wait_for(
        lambda: _with_cpu(backend.rows()), "a CPU reading for each worker"
    )
    assert [r.name for r in rows] == ["local-1", "local-2"]
    for row in rows:
        assert row.state == "running"
        assert row.pid == beats[row.name].pid
        assert row.cpu_percent is not None and row.cpu_percent >= 0.0
        assert row.rss_bytes is not None and row.rss_bytes > 0
    task = make_task()
    await services.enqueue([task])
    await wait_for(
        lambda: _state(services, task.id, "done"), "a worker process to run a task"
    )


def _with_cpu(rows: list[ProcessRow]) -> list[ProcessRow] | None:
    return rows if all(r.cpu_percent is not None for r in rows) else None


async def _state(services: Services, task_id: str, state: str) -> bool:
    return (await services.queue.get(task_id)).state == state


async def test_scale_down_terminates_the_extras(
    backend: LocalBackend, services: Services
) -> None:
    """Scaling 3 to 1 SIGTERMs the two highest workers; they exit cleanly."""
    await backend.set_desired(3)
    backend.reconcile()
    await _beating(services, {"local-1", "local-2", "local-3"})
    first = backend.processes["local-1"].pid
    extras = [backend.processes[n] for n in ("local-2", "local-3")]
    await backend.set_desired(1)
    backend.reconcile()
    assert {r.name: r.state for r in backend.rows()} == {
        "local-1": "running",
        "local-2": "stopping",
        "local-3": "stopping",
    }
    for proc in extras:
        await asyncio.to_thread(proc.popen.wait, 20)
        assert proc.popen.returncode == 0, f"{proc.name} exit {proc.popen.returncode}"
    backend.reconcile()
    assert list(backend.processes) == ["local-1"]
    assert backend.processes["local-1"].pid == first
    await _beating(services, {"local-1"})


async def test_killed_worker_is_restarted(
    backend: LocalBackend, services: Services
) -> None:
    """A worker killed with SIGKILL is started again by the supervisor."""
    await backend.set_desired(1)
    supervisor = asyncio.create_task(backend.supervise(interval=0.1))
    try:
        beats = await _beating(services, {"local-1"})
        old = backend.processes["local-1"].pid
        assert beats["local-1"].pid == old
        assert await backend.supervisor_alive()
        backend.kill("local-1")

        async def restarted() -> bool:
            proc = backend.processes.get("local-1")
            if proc is None or proc.pid == old:
                return False
            beat = (await _beats(services)).get("local-1")
            return beat is not None and beat.pid == proc.pid

        await wait_for(restarted, "local-1 to run again under a new pid")
        assert not pid_alive(old)
        assert len(backend.processes) == 1
    finally:
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor


async def test_stop_all_leaves_no_process(
    backend: LocalBackend, services: Services
) -> None:
    """stop_all ends every worker, busy or idle; busy ones hand their tasks back."""
    backend.extra_env.update(CORTEX_SIM_LATENCY_MIN="60", CORTEX_SIM_LATENCY_MAX="60")
    await backend.set_desired(2)
    backend.reconcile()
    await _beating(services, {"local-1", "local-2"})
    tasks = [make_task() for _ in range(3)]
    await services.enqueue(tasks)
    await wait_for(
        lambda: _all_running(services, [t.id for t in tasks]), "three tasks running"
    )
    pids = [p.pid for p in backend.processes.values()]
    # Each worker hands back within its own 0.5s grace; stop_all's bound
    # (grace + 5s) is only how long it waits before SIGKILL, which would
    # leave the tasks running: a busy machine must not reach it.
    await backend.stop_all(grace=10)
    assert backend.processes == {}
    assert backend.rows() == []
    for pid in pids:
        assert not pid_alive(pid), f"worker {pid} still runs"
    assert await _beats(services) == {}
    for record in await services.queue.get_many([t.id for t in tasks]):
        assert record is not None
        assert (record.state, record.attempts) == ("pending", 0)


async def _all_running(services: Services, ids: list[str]) -> bool:
    records = await services.queue.get_many(ids)
    return all(r is not None and r.state == "running" for r in records)


async def test_a_task_that_crashes_its_worker_is_dead_lettered(
    backend: LocalBackend, services: Services
) -> None:
    """A task whose run ends the worker process: the supervisor sees the exit
    code, spends the attempt with reason ``worker_crash``, and on the last
    attempt the task is dead; the next task runs on the restarted worker."""
    backend.extra_env.update(CORTEX_SIM_CRASH_MARKER="CRASH-ME")
    bad = make_task(max_attempts=1)
    bad = bad.model_copy(update={"query": bad.query + " CRASH-ME"})
    await services.enqueue([bad])
    await backend.set_desired(1)
    supervisor = asyncio.create_task(backend.supervise(interval=0.1))
    try:
        await wait_for(lambda: _state(services, bad.id, "dead"), "the task dead")
        record = await services.queue.get(bad.id)
        assert record.reason.startswith("worker_crash"), record.reason
        assert "exited with code 70" in record.reason
        assert backend._slots["local-1"].last_exit == 70
        good = make_task()
        await services.enqueue([good])
        await wait_for(
            lambda: _state(services, good.id, "done"), "the restarted worker"
        )
    finally:
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor
    assert services.audit.flush(timeout=10)
    kinds = [r["kind"] for r in services.audit.history(bad.id)]
    assert kinds[-1] == "dead", kinds


async def test_scale_info_says_the_count_its_owner_and_the_limit(
    backend: LocalBackend, services: Services
) -> None:
    control = ControlPlane(services, backend)
    await backend.set_desired(3)
    info = await control.scale_info()
    assert (info.current, info.desired, info.can_scale) == (0, 3, True)
    assert info.maximum == MAX_LOCAL_WORKERS == 64
    assert info.owner.startswith("nothing (no supervisor runs")


async def _cancel(*jobs: asyncio.Task[None]) -> None:
    """Cancel supervisor loops and wait for them to end."""
    for job in jobs:
        job.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await job


def _second(backend: LocalBackend, services: Services) -> LocalBackend:
    """Another process's backend on the same Redis (as a second console)."""
    return LocalBackend(
        backend.settings,
        redis_url=services.url,
        client=services.client,
        keys=services.keys,
        extra_env=backend.extra_env,
        audit=services.audit,
    )


async def test_one_supervisor_at_a_time_and_the_other_takes_over(
    backend: LocalBackend, services: Services
) -> None:
    """Two supervisors: one runs the workers, the other stands by; when the
    first stops, the second starts the desired count itself."""
    other = _second(backend, services)
    await backend.set_desired(2)
    first = asyncio.create_task(backend.supervise(interval=0.1))
    await wait_for(lambda: backend.leading, "the first supervisor to lead")
    second = asyncio.create_task(other.supervise(interval=0.1))
    try:
        old = await _beating(services, {"local-1", "local-2"})
        await asyncio.sleep(0.5)  # several turns of the standby's loop
        assert not other.leading and other.processes == {}
        assert await backend.supervisor_pid() == os.getpid()
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        await backend.stop_all(grace=1)  # what a console's quit does

        async def taken_over() -> bool:
            beats = await _beats(services)
            pids = {p.pid for p in other.processes.values()}
            return (
                other.leading
                and set(beats) == {"local-1", "local-2"}
                and {b.pid for b in beats.values()} == pids
            )

        await wait_for(taken_over, "the standby to run the workers")
        assert not {p.pid for p in old.values()} & {
            p.pid for p in other.processes.values()
        }
        assert await other.supervisor_alive()
    finally:
        await _cancel(first, second)
        await other.stop_all(grace=1)


async def test_a_standby_quitting_leaves_the_supervisor_alone(
    backend: LocalBackend, services: Services
) -> None:
    other = _second(backend, services)
    await backend.set_desired(0)
    first = asyncio.create_task(backend.supervise(interval=0.1))
    second = asyncio.create_task(other.supervise(interval=0.1))
    try:
        await wait_for(lambda: backend.leading or other.leading, "a leader")
        leader, standby = (backend, other) if backend.leading else (other, backend)
        await standby.stop_all(grace=1)
        await asyncio.sleep(0.3)
        assert leader.leading and await leader.supervisor_alive()
    finally:
        await _cancel(first, second)
        await other.stop_all(grace=1)


async def test_a_supervisor_that_lost_its_key_stops_its_workers(
    backend: LocalBackend, services: Services
) -> None:
    """A holder that stalled past its key's expiry, and found another process
    holding it, stops its own workers: never two sets of local-1, local-2."""
    await backend.set_desired(1)
    job = asyncio.create_task(backend.supervise(interval=0.1))
    try:
        (beat,) = (await _beating(services, {"local-1"})).values()
        await services.client.set(
            services.keys.backend_supervisor, json.dumps({"pid": 1}), px=60_000
        )
        await wait_for(lambda: not backend.leading, "the lost lead to be seen")
        await wait_for(lambda: not pid_alive(beat.pid), "its worker to stop")
        assert await backend.supervisor_pid() == 1
    finally:
        await _cancel(job)


async def test_workers_of_a_frozen_supervisor_stop_when_another_takes_over(
    backend: LocalBackend, services: Services
) -> None:
    """A supervisor that froze (its loop stops, its process lives on, so its
    workers still have their parent) loses its claim to another process: its
    workers see that and stop by themselves, handing their tasks back."""
    await backend.set_desired(1)
    job = asyncio.create_task(backend.supervise(interval=0.1))
    try:
        (beat,) = (await _beating(services, {"local-1"})).values()
    finally:
        await _cancel(job)  # the freeze: nothing renews the claim any more
    (proc,) = backend.processes.values()
    await services.client.set(
        services.keys.backend_supervisor,
        json.dumps({"pid": 1, "at": 0, "id": "another"}),
        px=60_000,
    )
    await wait_for(lambda: proc.popen.poll() is not None, "the worker to stop")
    assert proc.popen.returncode == 0, "it stopped cleanly, not killed"
    assert "another process supervises the workers now" in proc.log_path.read_text()
    assert beat.pid == proc.pid


async def test_only_the_process_that_takes_the_claim_at_start_sets_the_count(
    backend: LocalBackend, services: Services
) -> None:
    """'cortex up --workers 5' started beside a console that already runs 2
    stands by and leaves the count at 2 (it used to write 5 and run 2)."""
    other = _second(backend, services)
    first = asyncio.create_task(backend.supervise(interval=0.1, initial=0))
    try:
        await wait_for(lambda: backend.leading, "the first supervisor to lead")
        second = asyncio.create_task(other.supervise(interval=0.1, initial=5))
        try:
            await asyncio.sleep(0.5)
            assert not other.leading
            assert await backend.read_desired() == 0
        finally:
            await _cancel(second)
    finally:
        await _cancel(first)
        await other.stop_all(grace=1)
