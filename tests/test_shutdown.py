"""Whatever way a console or supervisor ends, what it started ends with it.

Also the command-line checks that keep a command from reaching the wrong
place: flags before the command, and a data folder that cannot be used.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import pty
import shlex
import signal
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from helpers import (
    cortex_command,
    events_of,
    make_task,
    pid_alive,
    processes_under,
    run_cli,
    wait_for,
    wait_for_sync,
)
from redis.exceptions import RedisError

from cortex_core.config import Settings
from cortex_core.system import Services, System


def _without_settings(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith("CORTEX_")}


def _error_line(result: subprocess.CompletedProcess[str], prog: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith(prog + ":")]
    assert len(lines) == 1, result.stderr
    return lines[0]


# Flags before the command ----------------------------------------------------


async def test_flags_before_the_command_are_obeyed(
    settings: Settings, services: Services, child_env: dict[str, str]
) -> None:
    """``cortex --namespace X enqueue`` enqueues in X, not in the default."""
    other = settings.replace(namespace=settings.namespace + "-other")
    result = run_cli(
        "--namespace",
        other.namespace,
        "enqueue",
        "Check pod status.",
        "--category",
        "cicd",
        "--priority",
        "high",
        env=child_env,
    )
    assert result.returncode == 0, result.stderr
    assert other.redis_url is not None
    there = await Services.connect(other, other.redis_url, name="other")
    try:
        assert (await there.queue.depths()).total_pending == 1
    finally:
        await there.close()
    assert (await services.queue.depths()).total_pending == 0


def test_a_bad_flag_before_the_command_is_refused(
    child_env: dict[str, str],
) -> None:
    """A Redis URL given before the command is checked like one after it."""
    result = run_cli("--redis-url", "http://127.0.0.1:1/0", "status", env=child_env)
    assert "redis_url" in _error_line(result, "cortex")


def test_a_flag_after_the_command_wins(child_env: dict[str, str]) -> None:
    """Given twice, the flag nearer the end is the one that counts."""
    result = run_cli(
        "--log-level", "INFO", "status", "--log-level", "LOUD", env=child_env
    )
    assert "log_level" in _error_line(result, "cortex")


# The data folder -------------------------------------------------------------


@pytest.mark.parametrize("prog", ["cortex", "cortex-tui"])
def test_a_data_dir_that_is_a_file_is_refused(
    child_env: dict[str, str], tmp_path: Path, prog: str
) -> None:
    """One line naming data_dir and the path, exit 2, nothing created."""
    file = tmp_path / "not-a-folder"
    file.write_text("x")
    if prog == "cortex":
        command = cortex_command("status", "--data-dir", str(file))
    else:
        command = [sys.executable, "-m", "cortex_tui", "--data-dir", str(file)]
    result = subprocess.run(
        command,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    line = _error_line(result, prog)
    assert "data_dir" in line and str(file) in line, line
    assert file.read_text() == "x"


def test_a_data_dir_that_cannot_be_created_is_refused(
    child_env: dict[str, str], tmp_path: Path
) -> None:
    """A folder under a file cannot be made: said in one line, exit 2."""
    file = tmp_path / "plain-file"
    file.write_text("x")
    result = run_cli("status", "--data-dir", str(file / "data"), env=child_env)
    line = _error_line(result, "cortex")
    assert "data_dir: cannot create" in line, line


# A worker outlives no supervisor ---------------------------------------------


async def test_worker_stops_and_hands_back_when_its_supervisor_dies(
    services: Services, child_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGKILL to the supervisor: its worker hands its task back and stops."""
    task = make_task()
    await services.enqueue([task])
    env = {**child_env, "CORTEX_SHUTDOWN_GRACE_SECONDS": "0.5"}
    worker = shlex.join(cortex_command("worker", "--name", "orphan"))
    log = tmp_path / "orphan.log"
    # The shell stands for the supervisor: the worker is its child.
    with open(log, "ab") as out:
        shell = subprocess.Popen(
            ["sh", "-c", f"{worker} --latency 60:60 --parent-pid $$ & wait"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    orphan: psutil.Process | None = None
    try:
        orphan = wait_for_sync(
            lambda: next(iter(psutil.Process(shell.pid).children()), None),
            "the worker process",
        )
        await wait_for(lambda: _state_is(services, task.id, "running"), "the claim")
        shell.kill()
        shell.wait(10)
        # Not our child, so its exit code is not ours to read: its log says
        # it stopped in order.
        await asyncio.to_thread(orphan.wait, 30)
        text = log.read_text(errors="replace")
        assert "worker orphan: stopped" in text and "Traceback" not in text, text
        record = await services.queue.get(task.id)
        assert (record.state, record.attempts) == ("pending", 0)
        handed = [e for e in await events_of(services.queue, task.id)]
        assert handed[-1].kind == "handed_back", handed
        assert handed[-1].detail == "shutdown"
        assert "supervisor" in text and "is gone" in text, text
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait(10)
        if orphan is not None and pid_alive(orphan.pid):
            orphan.kill()


async def _state_is(services: Services, task_id: str, state: str) -> bool:
    return (await services.queue.get(task_id)).state == state


# The console ends what it started ----------------------------------------------


@pytest.fixture
def console_pty() -> Iterator[int]:
    """A pseudo-terminal of 80x24 whose output is read and thrown away."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))

    def drain() -> None:
        while True:
            try:
                if not os.read(master, 65536):
                    return
            except OSError:
                return

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        yield slave
    finally:
        os.close(slave)
        os.close(master)
        reader.join(5)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_console_stopped_by_a_signal_stops_its_workers_and_redis(
    child_env: dict[str, str],
    tmp_path: Path,
    console_pty: int,
    sig: signal.Signals,
) -> None:
    """A killed console or a closed terminal leaves no worker or Redis behind."""
    data = tmp_path / "console"
    env = {**_without_settings(child_env), "TERM": "xterm-256color"}
    env["CORTEX_SHUTDOWN_GRACE_SECONDS"] = "2"
    console = subprocess.Popen(
        [sys.executable, "-m", "cortex_tui", "--data-dir", str(data)],
        env=env,
        stdin=console_pty,
        stdout=console_pty,
        stderr=console_pty,
        start_new_session=True,
    )
    try:

        def started() -> list[psutil.Process]:
            procs = [p for p in processes_under(data) if p.pid != console.pid]
            workers = [p for p in procs if "worker" in " ".join(_cmdline(p))]
            return procs if len(workers) == 2 and len(procs) == 3 else []

        procs = wait_for_sync(started, "Redis and 2 workers", timeout=60)
        console.send_signal(sig)
        assert console.wait(60) == 0
        for proc in procs:
            assert not pid_alive(proc.pid), f"{_cmdline(proc)} outlived the console"
        assert not processes_under(data)
    finally:
        if console.poll() is None:
            console.kill()
            console.wait(10)
        for proc in processes_under(data):
            proc.kill()


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


# Shutdown does not hang on a swallowed cancel --------------------------------


async def test_demo_load_ends_on_the_closing_flag_alone(settings: Settings) -> None:
    """Without any cancel, closing the system ends the demo load in order."""
    async with System.open(settings, start_workers=False) as system:
        system.start_demo_load(trickle_seconds=0.05)
        (demo,) = system._background
        await wait_for(
            lambda: _pending_at_least(system, 51), "the demo load to trickle"
        )
        system._closing.set()
        await asyncio.wait_for(asyncio.shield(demo), timeout=10)
        assert not demo.cancelled() and demo.exception() is None


async def _pending_at_least(system: System, count: int) -> bool:
    return (await system.services.queue.depths()).total_pending >= count


async def test_shutdown_is_bounded_when_a_loop_swallows_its_cancel(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A background loop that swallows every cancel delays the exit, no more.

    redis-py can swallow a cancel that lands inside a pipeline; a shutdown
    that waited on such a loop would never end.
    """
    release, started = asyncio.Event(), asyncio.Event()

    async def stubborn() -> None:
        started.set()
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue

    caplog.set_level(logging.ERROR, logger="cortex_core.system")
    async with System.open(settings, start_workers=False) as system:
        system._spawn(stubborn(), "stubborn test loop")
        (left,) = system._background
        await started.wait()
    assert not left.done()
    assert "did not stop in 5s" in caplog.text
    release.set()
    await left


# The embedded Redis lives as long as someone uses it --------------------------


def _embedded_settings(tmp_path: Path) -> Settings:
    return Settings.load({"data_dir": tmp_path / "shared"}, environ={})


async def test_a_second_console_keeps_redis_when_the_first_quits(
    tmp_path: Path,
) -> None:
    """Two consoles on one data folder: the first to quit leaves Redis to the
    other, and the last one stops it."""
    settings = _embedded_settings(tmp_path)
    first_cm = System.open(settings, start_workers=False)
    first = await first_cm.__aenter__()
    second_cm = System.open(settings, start_workers=False)
    try:
        second = await second_cm.__aenter__()
    except BaseException:
        await first_cm.__aexit__(None, None, None)
        raise
    assert first.embedded is not None and second.embedded is not None
    assert first.embedded.owned and not second.embedded.owned
    pid = first.embedded.pid
    await first_cm.__aexit__(None, None, None)
    try:
        assert pid_alive(pid), "the first console stopped Redis under the second"
        assert await second.services.client.ping()
    finally:
        await second_cm.__aexit__(None, None, None)
    assert not pid_alive(pid), "the last console left Redis running"


async def test_the_console_starts_its_redis_again_if_it_dies(
    tmp_path: Path,
) -> None:
    """kill -9 of the embedded Redis: it comes back on the same address."""
    settings = _embedded_settings(tmp_path)
    async with System.open(settings, start_workers=False) as system:
        assert system.embedded is not None
        old = system.embedded.pid
        os.kill(old, signal.SIGKILL)
        await wait_for(
            lambda: system.embedded is not None and system.embedded.pid != old,
            "a new redis-server",
        )
        assert await wait_for(lambda: _pings(system), "Redis to answer again")
        await system.services.enqueue([make_task()])
    assert not pid_alive(system.embedded.pid)


async def _pings(system: System) -> bool:
    try:
        return bool(await system.services.client.ping())
    except (OSError, ConnectionError, RedisError):
        return False


def test_a_refused_worker_count_starts_nothing(
    child_env: dict[str, str], tmp_path: Path
) -> None:
    """``cortex up --workers 65``: one line naming workers, no Redis left."""
    data = tmp_path / "up"
    result = run_cli(
        "up",
        "--workers",
        "65",
        "--data-dir",
        str(data),
        env=_without_settings(child_env),
    )
    assert "workers" in _error_line(result, "cortex")
    assert not processes_under(data)
