"""The views behind ':', the filter, sorting, the detail, dead letters, flow
control and the scale dialog, each driven by its keys."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, Static

from cortex_core.errors import InvalidTransition
from cortex_core.models import Priority
from cortex_core.snapshot import TaskFilter, TaskRow
from cortex_tui.app import CortexApp
from cortex_tui.screens.confirm import ConfirmScreen
from cortex_tui.screens.dashboard import DashboardScreen
from cortex_tui.screens.detail import TaskDetailScreen
from cortex_tui.screens.flow import FlowScreen
from cortex_tui.screens.help import HelpScreen
from cortex_tui.screens.scale import ScaleScreen
from cortex_tui.screens.tasks import PAGE, DeadLetterScreen, TaskListScreen
from cortex_tui.screens.workers import WorkersScreen
from cortex_tui.widgets.header import HeaderBar
from cortex_tui.widgets.tasks import TaskTable
from cortex_tui.widgets.workers import WorkerTable

from .fixtures import (
    DEAD_TASK,
    PENDING_TASK,
    TASKS,
    FixedControl,
    record_notifications,
    run_line,
    settle,
)

# A guard against a hang, not a speed check: on a busy 2-core machine some
# of these tests took 4 to 8s, close to the 10s and 20s limits they had.
pytestmark = pytest.mark.timeout(60)

SIZE = (120, 40)


async def command(pilot: Pilot[Any], line: str) -> None:
    """Run ``line`` on the command line."""
    await run_line(pilot, "colon", line)


async def filter_line(pilot: Pilot[Any], text: str) -> None:
    """Replace the filter with ``text``."""
    await run_line(pilot, "slash", text)


def shown_ids(app: CortexApp) -> list[str]:
    return [r.task_id for r in app.screen.query_one(TaskTable).task_rows]


async def test_colon_switches_views_by_name_and_short_name(app: CortexApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for line, view in [
            ("tasks", TaskListScreen),
            ("overview", DashboardScreen),
            ("t", TaskListScreen),
            ("dead", DeadLetterScreen),
            ("d", DeadLetterScreen),
            ("tasks", TaskListScreen),  # from the dead letters, a kind of list
            ("dead", DeadLetterScreen),
            ("workers", WorkersScreen),
            ("w", WorkersScreen),
            ("o", DashboardScreen),
        ]:
            await command(pilot, line)
            assert type(app.screen) is view, line


async def test_an_unknown_command_says_what_is_known(app: CortexApp) -> None:
    notes = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await command(pilot, "frobnicate")
        assert notes[-1].severity == "error"
        assert notes[-1].message.startswith("unknown command 'frobnicate': one of")
        assert isinstance(app.screen, DashboardScreen)


async def test_escape_closes_the_command_line_without_running_it(
    app: CortexApp, control: FixedControl
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("colon", *"tasks", "escape")  # think better of it
        await settle(pilot)
        assert isinstance(app.screen, DashboardScreen)
        assert not app.screen.query_one("#prompt").display


async def test_the_tasks_view_reads_a_page_and_shows_every_state(
    app: CortexApp, control: FixedControl
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await command(pilot, "tasks")
        assert shown_ids(app) == [t.task_id for t in TASKS]
        view, task_filter, offset, limit = control.calls_to("tasks")[-1]
        assert (view, task_filter, offset, limit) == ("tasks", TaskFilter(), 0, PAGE)


async def test_slash_filters_as_typed_then_asks_the_server(
    app: CortexApp, control: FixedControl
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await command(pilot, "tasks")
        await pilot.press("slash", *"priority:high")  # narrows before enter
        await pilot.pause()
        assert {r.priority for r in app.screen.query_one(TaskTable).task_rows} == {
            "high"
        }
        await pilot.press("enter")  # the server reads with the filter
        await settle(pilot)
        assert control.calls_to("tasks")[-1][1] == TaskFilter(
            priorities=frozenset({"high"})
        )
        status = str(app.screen.query_one("#list-status").render())
        assert "1 to 2 of 2 · filter: priority:high" in status
        await pilot.press("slash", "space", *"category:cicd", "enter")  # add a term
        await settle(pilot)
        assert app.screen.filter_text == "priority:high category:cicd"  # type: ignore[attr-defined]
        assert shown_ids(app) == []
        # Categories are not counted over the whole list: the status says
        # how many of the window read matched, not a total it does not know.
        status = str(app.screen.query_one("#list-status").render())
        assert "0 matching in 1 to 2 of 2" in status
        await pilot.press("slash", "escape")  # escape clears the filter
        await settle(pilot)
        assert shown_ids(app) == [t.task_id for t in TASKS]
        assert control.calls_to("tasks")[-1][1] == TaskFilter()


async def test_free_text_and_status_terms(app: CortexApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await command(pilot, "tasks")
        await filter_line(pilot, "status:pending pipelines")
        assert shown_ids(app) == ["0196a1b2c3d4e5f6a7b8c9d0"]


async def test_a_bad_filter_is_named_and_changes_nothing(
    app: CortexApp, control: FixedControl
) -> None:
    notes = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await command(pilot, "tasks")
        await filter_line(pilot, "status:sleeping")
        assert notes[-1].severity == "error"
        assert notes[-1].message.startswith("status: sleeping is not one of")
        assert len(shown_ids(app)) == len(TASKS)


async def test_o_sorts_by_column_and_capital_o_reverses(app: CortexApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await command(pilot, "tasks")
        await pilot.press("o", "o", "o")  # task, status, then priority
        priorities = [r.priority for r in app.screen.query_one(TaskTable).task_rows]
        assert priorities == ["critical", "high", "high", "medium", "low"]
        await pilot.press("O")  # reverse
        priorities = [r.priority for r in app.screen.query_one(TaskTable).task_rows]
        assert priorities == ["low", "medium", "high", "high", "critical"]


async def test_brackets_page_through_a_long_list(
    app: CortexApp, control: FixedControl
) -> None:
    template = TASKS[1]
    control.task_rows = tuple(
        replace(template, task_id=f"{n:024x}") for n in range(PAGE * 2 + 10)
    )
    notes = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await command(pilot, "tasks")
        assert len(shown_ids(app)) == PAGE
        await pilot.press("right_square_bracket")  # next page
        await settle(pilot)
        assert control.calls_to("tasks")[-1][2] == PAGE
        assert shown_ids(app)[0] == f"{PAGE:024x}"
        await pilot.press("right_square_bracket", "right_square_bracket")
        await settle(pilot)
        assert shown_ids(app) == [f"{n:024x}" for n in range(PAGE * 2, PAGE * 2 + 10)]
        assert notes[-1].message == "This is the last page."
        await pilot.press("left_square_bracket")  # back one page
        await settle(pilot)
        assert control.calls_to("tasks")[-1][2] == PAGE


async def test_enter_opens_the_detail_and_escape_returns(
    app: CortexApp, control: FixedControl
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await command(pilot, "dead")
        await pilot.press("enter")  # open the dead task
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, TaskDetailScreen)
        text = str(screen.query_one("#detail-body", Static).render())
        for heading in (
            "Query",
            "Last error",
            "Status history",
            "Tokens",
            "Result",
            "Audit files",
        ):
            assert heading in text
        assert "journal-0003.jsonl" in text
        assert "1,840" in text
        scroll = screen.query_one("#detail")
        await pilot.press("pagedown")  # the result is long: the body scrolls
        assert scroll.scroll_y > 0
        await pilot.press("g")  # read it again
        await settle(pilot)
        assert control.calls_to("task_detail") == [(DEAD_TASK,), (DEAD_TASK,)]
        await pilot.press("escape")
        assert isinstance(app.screen, DeadLetterScreen)


async def test_enter_on_the_overview_log_opens_the_detail(app: CortexApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter")  # the newest log entry is the dead task
        await settle(pilot)
        assert isinstance(app.screen, TaskDetailScreen)
        assert app.screen.task_id == DEAD_TASK


async def test_an_unknown_task_says_so_in_the_detail(
    app: CortexApp, control: FixedControl
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await command(pilot, "tasks")
        control.task_rows = ()  # the task vanished since the page was read
        await pilot.press("enter")
        await settle(pilot)
        text = str(app.screen.query_one("#detail-body", Static).render())
        assert text.startswith("the task could not be read: no task with id")


async def test_c_cancels_a_queued_task_after_a_question(
    app: CortexApp, control: FixedControl
) -> None:
    notes = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await command(pilot, "tasks")
        await pilot.press("c")  # the running task cannot be cancelled
        await settle(pilot)
        assert notes[-1].message.endswith("only a queued task can be cancelled")
        await pilot.press("down", "c")  # the pending one asks first
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await settle(pilot)
        assert control.calls_to("cancel") == []
        await pilot.press("c", "y")
        await settle(pilot)
        assert control.calls_to("cancel") == [(PENDING_TASK,)]
        assert notes[-1].message == f"Cancelled {PENDING_TASK[-8:]}"


async def test_dead_letters_requeue_one_all_matching_and_delete(
    app: CortexApp, control: FixedControl
) -> None:
    notes = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await command(pilot, "dead")
        await pilot.press("r")  # requeue the task under the cursor
        await settle(pilot)
        assert control.calls_to("requeue") == [(DEAD_TASK,)]
        await filter_line(pilot, "category:security")
        await pilot.press("R")  # requeue every match, after a question
        assert isinstance(app.screen, ConfirmScreen)
        question = str(app.screen.query_one("#question").render())
        assert "category:security" in question
        await pilot.press("y")
        await settle(pilot)
        assert control.calls_to("requeue_dead") == [
            (TaskFilter(categories=frozenset({"security"})),)
        ]
        assert notes[-1].message == "Requeued 1 dead tasks"
        await pilot.press("d", "n")  # delete asks; no keeps it
        await settle(pilot)
        assert control.calls_to("delete_dead") == []
        await pilot.press("d", "y")
        await settle(pilot)
        assert control.calls_to("delete_dead") == [(DEAD_TASK,)]


async def test_a_refused_change_is_an_error_and_the_view_carries_on(
    app: CortexApp, control: FixedControl
) -> None:
    control.change_error = InvalidTransition("task is pending, not dead")
    notes = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await command(pilot, "dead")
        await pilot.press("d", "y")
        await settle(pilot)
        assert notes[-1].message == "task is pending, not dead"
        assert notes[-1].severity == "error"
        assert isinstance(app.screen, DeadLetterScreen)


async def test_p_opens_flow_control_with_one_key_per_choice(
    app: CortexApp, control: FixedControl
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for keys, call in [
            (("a",), ("pause", (None,))),
            (("r",), ("resume", (None,))),
            (("1",), ("pause", (Priority.CRITICAL,))),
            (("2",), ("pause", (Priority.HIGH,))),
            (("3",), ("pause", (Priority.MEDIUM,))),
            (("4",), ("resume", (Priority.LOW,))),  # low is paused already
            (("d", "y"), ("drain", ())),  # drain asks first
        ]:
            await pilot.press("p")
            assert isinstance(app.screen, FlowScreen)
            await pilot.press(*keys)
            await settle(pilot)
            assert [c for c in control.calls if c[0] != "snapshot"][-1] == call
            assert isinstance(app.screen, DashboardScreen)


async def test_escape_leaves_flow_control_unchanged(
    app: CortexApp, control: FixedControl
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("p", "escape")
        await settle(pilot)
        assert isinstance(app.screen, DashboardScreen)
        assert not [c for c in control.calls if c[0] in ("pause", "resume", "drain")]


async def test_flow_and_scale_commands(app: CortexApp, control: FixedControl) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for line, call in [
            ("pause high", ("pause", (Priority.HIGH,))),
            ("pause", ("pause", (None,))),
            ("resume low", ("resume", (Priority.LOW,))),
            ("resume all", ("resume", (None,))),
            ("scale 5", ("scale_to", (5,))),
        ]:
            await command(pilot, line)
            assert [c for c in control.calls if c[0] != "snapshot"][-1] == call


async def test_bad_command_arguments_are_named(
    app: CortexApp, control: FixedControl
) -> None:
    notes = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for line, message in [
            ("pause urgent", "no priority 'urgent': all, critical, high, medium, low"),
            ("pause high low", "pause: at most one priority"),
            ("scale many", "scale: give the worker count, as in :scale 3"),
            ("drain now", "drain: takes no argument"),
        ]:
            await command(pilot, line)
            assert notes[-1].message == message
            assert notes[-1].severity == "error"
        assert [c for c in control.calls if c[0] != "snapshot"] == []


async def test_drain_and_scale_zero_commands_ask_first(
    app: CortexApp, control: FixedControl
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await command(pilot, "drain")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await command(pilot, "scale 0")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await settle(pilot)
        assert control.calls_to("drain") == [()]
        assert control.calls_to("scale_to") == []


async def test_s_opens_the_scale_dialog_with_the_owner(
    app: CortexApp, control: FixedControl
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("s")
        await settle(pilot)
        assert isinstance(app.screen, ScaleScreen)
        info = str(app.screen.query_one("#scale-info", Static).render())
        assert "local supervisor" in info
        assert "desired  3" in info
        await pilot.press(*"7", "enter")
        await settle(pilot)
        assert control.calls_to("scale_to") == [(7,)]
        header = app.screen.query_one(HeaderBar).header
        assert header is not None and header.desired_workers == 7


async def test_the_scale_dialog_asks_before_zero_and_rejects_nonsense(
    app: CortexApp, control: FixedControl
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("s")
        await settle(pilot)
        app.screen.query_one("#count", Input).value = "65"
        await pilot.press("enter")  # above what the backend said it accepts
        assert "count: a whole number from 0 to 64" in str(
            app.screen.query_one("#form-error").render()
        )
        app.screen.query_one("#count", Input).value = "0"
        await pilot.press("enter")  # 0 asks
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(pilot)
        assert control.calls_to("scale_to") == [(0,)]


async def test_the_workers_view_filters_by_text(app: CortexApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await command(pilot, "workers")
        table = app.screen.query_one(WorkerTable)
        assert len(table.worker_rows) == 3
        await filter_line(pilot, "missing")
        assert [w.state for w in table.worker_rows] == ["missing"]


async def test_the_overview_log_filters_too(app: CortexApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await filter_line(pilot, "status:dead")
        log = app.screen.query_one("#log")
        assert log.row_count == 1  # type: ignore[attr-defined]
        await pilot.press("slash", "escape")
        await settle(pilot)
        assert log.row_count == 4  # type: ignore[attr-defined]


async def test_the_header_shows_pauses_and_the_alerts_line(app: CortexApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        header = str(app.screen.query_one(HeaderBar).render())
        assert "PAUSED low" in header
        alerts = str(app.screen.query_one("#alerts").render())
        assert "1 worker missing heartbeats" in alerts
        queues = str(app.screen.query_one("#queues").render())
        assert "2h05m" in queues  # the oldest medium task


async def test_help_lists_every_key_of_the_view_and_the_commands(
    app: CortexApp,
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await command(pilot, "dead")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = str(app.screen.query_one("#keys").render())
        for key in ("r", "R", "d", "o", "O", "[", "]", "enter", "/", ":", "p", "s"):
            assert any(line.split()[:1] == [key] for line in text.splitlines()), key
        assert "scale N" in text


def test_task_rows_of_the_fixture_cover_every_state() -> None:
    assert {r.state for r in TASKS} == {"running", "pending", "dead", "done"}
    assert isinstance(TASKS[0], TaskRow)


async def test_escape_leaves_the_scale_dialog_without_a_change(
    app: CortexApp, control: FixedControl
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("s")
        await settle(pilot)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, DashboardScreen)
        assert control.calls_to("scale_to") == []


async def test_page_keys_scroll_the_detail_both_ways(app: CortexApp) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await command(pilot, "dead")
        await pilot.press("enter")
        await settle(pilot)
        scroll = app.screen.query_one("#detail")
        await pilot.press("pagedown", "pagedown")
        lowest = scroll.scroll_y
        assert lowest > 0
        await pilot.press("pageup")
        assert 0 < scroll.scroll_y < lowest
        await pilot.press("up")  # the arrows scroll too
        assert scroll.scroll_y < lowest - 1
