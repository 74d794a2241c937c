"""Requeue, scaling, help and quit, driven by their keys."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from textual.binding import Binding

from cortex_core.errors import InvalidTransition, UnknownTask
from cortex_core.snapshot import LogEntry
from cortex_tui.app import CortexApp
from cortex_tui.screens.confirm import ConfirmScreen
from cortex_tui.screens.dashboard import DashboardScreen
from cortex_tui.screens.help import HelpScreen
from cortex_tui.screens.view import ViewScreen
from cortex_tui.widgets.header import HeaderBar
from cortex_tui.widgets.log import TaskLog

from .fixtures import (
    DEAD_TASK,
    DONE_TASK,
    FixedControl,
    dashboard,
    record_notifications,
    settle,
)

# A guard against a hang, not a speed check: on a busy 2-core machine some
# of these tests took 4 to 8s, close to the 10s and 20s limits they had.
pytestmark = pytest.mark.timeout(60)

SIZE = (120, 40)


async def test_r_requeues_the_task_under_the_cursor(
    app: CortexApp, control: FixedControl
) -> None:
    notes = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("r")  # requeue the newest entry, where the cursor starts
        await pilot.press("down")  # move the cursor to the second entry
        await pilot.press("r")  # requeue that one too
        await settle(pilot)
        assert control.calls_to("requeue") == [(DEAD_TASK,), (DONE_TASK,)]
        assert [n.message for n in notes] == [
            f"Requeued {DEAD_TASK[-8:]}",
            f"Requeued {DONE_TASK[-8:]}",
        ]


async def test_a_refused_requeue_is_an_error_notification(
    app: CortexApp, control: FixedControl
) -> None:
    control.requeue_error = InvalidTransition("task is done, not dead [cannot]")
    notes = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("down")  # select the done task
        await pilot.press("r")  # ask to requeue it; the system refuses
        await settle(pilot)
        assert notes[-1].message == "task is done, not dead [cannot]"
        assert notes[-1].severity == "error"
        assert not notes[-1].markup
        control.requeue_error = UnknownTask("no such task")
        await pilot.press("r")  # the console still answers keys
        await settle(pilot)
        assert notes[-1].message == "no such task"
        assert isinstance(app.screen, DashboardScreen)
        assert len(control.calls_to("requeue")) == 2


async def test_r_with_an_empty_log_asks_for_a_selection(
    app: CortexApp, control: FixedControl
) -> None:
    control.snapshot_data = replace(control.snapshot_data, log=())
    notes = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("r")  # nothing is selected
        await settle(pilot)
        assert control.calls_to("requeue") == []
        assert notes[-1].severity == "warning"


async def test_the_cursor_stays_on_its_entry_when_the_log_grows(
    app: CortexApp, control: FixedControl
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("down")  # select the done task
        log = app.screen.query_one(TaskLog)
        assert log.selected_task_id == DONE_TASK
        newer = LogEntry(
            at=control.snapshot_data.taken_at, kind="enqueued", task_id="f" * 24
        )
        control.snapshot_data = replace(
            control.snapshot_data, log=(newer, *control.snapshot_data.log)
        )
        dashboard(app).poll()
        await settle(pilot)
        assert log.row_count == 5
        assert log.selected_task_id == DONE_TASK
        await pilot.press("r")  # requeue acts on what the operator selected
        await settle(pilot)
        assert control.calls_to("requeue") == [(DONE_TASK,)]


async def test_a_cursor_on_the_newest_entry_follows_new_entries(
    app: CortexApp, control: FixedControl
) -> None:
    """With the cursor left on top, the log keeps showing the newest event."""
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        log = app.screen.query_one(TaskLog)
        assert log.cursor_row == 0
        newer = LogEntry(
            at=control.snapshot_data.taken_at, kind="enqueued", task_id="f" * 24
        )
        control.snapshot_data = replace(
            control.snapshot_data, log=(newer, *control.snapshot_data.log)
        )
        dashboard(app).poll()
        await settle(pilot)
        assert log.cursor_row == 0
        assert log.selected_task_id == "f" * 24


async def test_plus_and_minus_scale_and_report_the_new_count(
    app: CortexApp, control: FixedControl
) -> None:
    notes = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("plus")  # one more worker: 3 -> 4
        await settle(pilot)
        assert control.calls_to("scale") == [(1,)]
        assert notes[-1].message == "Scaling to 4 workers"
        header = app.screen.query_one(HeaderBar).header
        assert header is not None and header.desired_workers == 4
        await pilot.press("minus")  # one fewer: 4 -> 3, no question asked
        await settle(pilot)
        assert control.calls_to("scale") == [(1,), (-1,)]
        assert notes[-1].message == "Scaling to 3 workers"
        assert isinstance(app.screen, DashboardScreen)


async def test_scaling_to_zero_asks_first(
    app: CortexApp, control: FixedControl
) -> None:
    control.desired = 1
    notes = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("minus")  # 1 -> 0 needs a yes
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # decline
        await settle(pilot)
        assert isinstance(app.screen, DashboardScreen)
        assert control.calls_to("scale") == []
        await pilot.press("minus")  # ask again
        await pilot.press("escape")  # escape declines too
        await settle(pilot)
        assert control.calls_to("scale") == []
        await pilot.press("minus")  # ask a third time
        await pilot.press("enter")  # enter presses the focused Cancel button
        await settle(pilot)
        assert control.calls_to("scale") == []
        await pilot.press("minus")  # and a last time
        await pilot.press("y")  # accept
        await settle(pilot)
        assert control.calls_to("scale") == [(-1,)]
        assert notes[-1].message == "Scaling to 0 workers"


async def test_two_quick_minus_presses_still_ask_before_zero(
    app: CortexApp, control: FixedControl
) -> None:
    control.desired = 2
    control.scale_gate = asyncio.Event()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("minus")  # 2 -> 1; the answer is held back
        await pilot.press("minus")  # 1 -> 0 while the first is unanswered
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # decline the second step
        control.scale_gate.set()
        await settle(pilot)
        assert control.calls_to("scale") == [(-1,)]
        assert control.desired == 1


async def test_without_a_desired_count_live_workers_are_counted(
    app: CortexApp, control: FixedControl
) -> None:
    control.desired = None
    running, _, missing = control.snapshot_data.workers
    control.snapshot_data = replace(control.snapshot_data, workers=(running, missing))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("minus")  # one live worker: removing it needs a yes
        assert isinstance(app.screen, ConfirmScreen)
        assert "Scale to 0 workers?" in str(app.screen.query_one("#question").render())


async def test_an_unknown_count_asks_before_removing(
    app: CortexApp, control: FixedControl
) -> None:
    control.desired = None
    control.failure = ConnectionError("refused")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("plus")  # adding is always safe
        await settle(pilot)
        assert control.calls_to("scale") == [(1,)]
        control.desired = None
        await pilot.press("minus")  # the answer to + said 1, so 1 -> 0 asks
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # decline


async def test_an_unknown_count_with_no_picture_asks_before_removing(
    app: CortexApp, control: FixedControl
) -> None:
    control.desired = None
    control.failure = ConnectionError("refused")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("minus")  # nothing is known about the workers
        assert isinstance(app.screen, ConfirmScreen)
        question = str(app.screen.query_one("#question").render())
        assert question.startswith("The worker count is not known yet.")
        await pilot.press("y")  # accept
        await settle(pilot)
        assert control.calls_to("scale") == [(-1,)]


async def test_question_mark_lists_every_key_and_escape_closes_it(
    app: CortexApp,
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")  # open the help
        assert isinstance(app.screen, HelpScreen)
        text = str(app.screen.query_one("#keys").render())
        shown = {line.split()[0] for line in text.splitlines() if line.strip()}
        for binding in (*DashboardScreen.BINDINGS, *ViewScreen.BINDINGS):
            assert isinstance(binding, Binding)
            if binding.action == "release_pin":
                # Only in cluster mode (tests/tui/test_cluster.py).
                assert binding.key not in shown
                continue
            assert (binding.key_display or binding.key) in shown
        assert {"n", "r", "+", "-", "?", "q", ":", "/", "p", "s", "escape"} <= shown
        await pilot.press("escape")  # close the help
        assert isinstance(app.screen, DashboardScreen)


async def test_q_quits_and_closes_the_control(
    app: CortexApp, control: FixedControl
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("q")  # quit
        await pilot.pause()
        assert not app.is_running
    assert control.closed
