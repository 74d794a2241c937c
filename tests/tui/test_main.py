"""The ``cortex-tui`` entry point: flags, settings, and opening the system."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cortex_core.config import Settings
from cortex_core.errors import RedisUnavailable
from cortex_tui import app as app_module
from cortex_tui.app import CortexApp, main

from .fixtures import FixedControl

# A guard against a hang, not a speed check: on a busy 2-core machine some
# of these tests took 4 to 8s, close to the 10s and 20s limits they had.
pytestmark = pytest.mark.timeout(60)


@dataclass
class FakeSystem:
    """What ``main`` needs of ``System``: ``open`` and ``control``."""

    control: FixedControl
    opened: list[tuple[Settings, bool]]
    failure: Exception | None = None
    local_workers: int = 0

    @contextlib.asynccontextmanager
    async def open(
        self, settings: Settings, *, start_workers: bool = True
    ) -> AsyncIterator[FakeSystem]:
        self.opened.append((settings, start_workers))
        if self.failure is not None:
            raise self.failure
        yield self


@pytest.fixture
def system(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeSystem:
    for name in ("CORTEX_REDIS_URL", "CORTEX_NAMESPACE", "CORTEX_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    fake = FakeSystem(control=FixedControl(), opened=[])
    monkeypatch.setattr(app_module, "System", fake)
    return fake


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[CortexApp]:
    """The apps ``main`` started, without drawing them on this terminal."""
    started: list[CortexApp] = []

    async def run_async(self: CortexApp, *args: Any, **kwargs: Any) -> None:
        started.append(self)

    monkeypatch.setattr(CortexApp, "run_async", run_async)
    return started


def test_main_runs_the_console_on_the_opened_system(
    system: FakeSystem,
    runs: list[CortexApp],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--namespace", "blue", "--workers", "4", "--data-dir", "d"]
    system.local_workers = 4
    assert main([*argv, "--refresh", "2.5"]) == 0
    out = capsys.readouterr().out
    assert "opening the embedded Redis in" in out
    assert out.endswith("cortex-tui: stopping 4 local workers\n")
    [(settings, start_workers)] = system.opened
    assert (settings.namespace, settings.workers, start_workers) == ("blue", 4, True)
    [app] = runs
    assert app._refresh_seconds == 2.5
    assert app._control is system.control
    assert (tmp_path / "d" / "logs").is_dir()


def test_a_read_only_console_starts_no_workers(
    system: FakeSystem, runs: list[CortexApp]
) -> None:
    """Embedded mode starts local workers, but not under --read-only: they
    would run tasks an operator may have meant to leave queued."""
    assert main(["--read-only", "--data-dir", "d"]) == 0
    assert main(["--read-only", "--workers", "2", "--data-dir", "d"]) == 0
    assert main(["--data-dir", "d"]) == 0
    assert [start for _, start in system.opened] == [False, False, True]
    assert [s.read_only for s, _ in system.opened] == [True, True, False]


def test_main_reports_an_unreachable_redis_without_a_traceback(
    system: FakeSystem, runs: list[CortexApp], capsys: pytest.CaptureFixture[str]
) -> None:
    system.failure = RedisUnavailable("redis://127.0.0.1:6390: connection refused")
    assert main(["--redis-url", "redis://127.0.0.1:6390"]) == 2
    err = capsys.readouterr().err
    assert err == "cortex-tui: redis://127.0.0.1:6390: connection refused\n"
    assert runs == []


def test_main_reports_bad_settings_without_a_traceback(
    system: FakeSystem,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CORTEX_NAMESPACE", "no spaces allowed")
    assert main([]) == 2
    assert capsys.readouterr().err.startswith("cortex-tui: namespace: ")
    assert system.opened == []


def test_the_app_refuses_a_refresh_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="refresh_seconds"):
        CortexApp(FixedControl(), refresh_seconds=0)


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1", "abc", "1e9"])
def test_refresh_must_be_a_finite_number_above_zero(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """'--refresh nan' passed a '<= 0' check and then spun the console."""
    with pytest.raises(SystemExit) as exited:
        main(["--refresh", value])
    assert exited.value.code == 2
    assert "--refresh:" in capsys.readouterr().err


@pytest.mark.parametrize("port", ["0", "99999", "-1"])
def test_serve_refuses_a_port_out_of_range(
    port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--serve", "--port", port])
    assert exited.value.code == 2
    assert f"--port must be from 1 to 65535, not {port}" in capsys.readouterr().err


def test_serve_on_a_busy_port_is_one_line_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cortex-tui: cannot serve on 127.0.0.1:{port}:" in err
    assert "address already in use" in err and "Traceback" not in err
