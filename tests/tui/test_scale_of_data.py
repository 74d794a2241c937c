"""With 50,000 tasks in the log and the lists, a key is handled before the
next refresh lands, and only what fits a page is drawn."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from cortex_core.snapshot import LogEntry
from cortex_tui.app import CortexApp
from cortex_tui.screens.dashboard import LOG_LIMIT
from cortex_tui.screens.tasks import PAGE, TaskListScreen
from cortex_tui.screens.view import ViewScreen
from cortex_tui.widgets.log import TaskLog
from cortex_tui.widgets.tasks import TaskTable

from .fixtures import NOW, TASKS, FixedControl, run_line, settle

pytestmark = pytest.mark.timeout(60)

MANY = 50_000


@pytest.fixture
def crowded(control: FixedControl) -> FixedControl:
    log = tuple(
        LogEntry(
            at=NOW - n,
            kind="enqueued",
            task_id=f"{n:024x}",
            priority="medium",
            category="inventory",
            event_id=f"{int(NOW) * 1000 - n}-0",
        )
        for n in range(MANY)
    )
    control.snapshot_data = replace(control.snapshot_data, log=log)
    control.task_rows = tuple(
        replace(TASKS[1], task_id=f"{n:024x}") for n in range(MANY)
    )
    return control


async def test_a_key_is_handled_while_a_refresh_is_outstanding(
    app: CortexApp, crowded: FixedControl
) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        log = app.screen.query_one(TaskLog)
        assert log.row_count == LOG_LIMIT  # the newest page, not all 50,000
        crowded.snapshot_gate = asyncio.Event()
        screen = app.screen
        assert isinstance(screen, ViewScreen)
        screen.poll()  # a refresh starts and waits for its answer
        await pilot.pause()
        await pilot.press("down", "down")  # handled now, not after the refresh
        assert log.cursor_row == 2
        assert log.selected_task_id == f"{2:024x}"
        newer = LogEntry(at=NOW + 1, kind="enqueued", task_id="f" * 24)
        crowded.snapshot_data = replace(
            crowded.snapshot_data, log=(newer, *crowded.snapshot_data.log)
        )
        crowded.snapshot_gate.set()  # the refresh lands after the keys
        await settle(pilot)
        assert log.selected_task_id == f"{2:024x}"  # the cursor kept its task
        assert log.row_count == LOG_LIMIT


async def test_the_tasks_view_reads_and_draws_one_page(
    app: CortexApp, crowded: FixedControl
) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await run_line(pilot, "colon", "tasks")
        screen = app.screen
        assert isinstance(screen, TaskListScreen)
        table = screen.query_one(TaskTable)
        assert table.row_count == PAGE
        assert crowded.calls_to("tasks")[-1][3] == PAGE
        crowded.snapshot_gate = asyncio.Event()
        screen.poll()
        await pilot.pause()
        await pilot.press(*["down"] * 10)  # ten rows down, while it waits
        assert table.cursor_row == 10
        await pilot.press("slash", *"zzz")  # the filter narrows as typed
        await pilot.pause()
        assert table.row_count == 0
        crowded.snapshot_gate.set()
        await settle(pilot)
        assert "1 to 200 of 50,000" in str(screen.query_one("#list-status").render())
