"""Pictures of every view and dialog at 80x24 (a terminal over SSH) and
160x48, on fixed data, compared with approved SVGs.

Update them with ``pytest tests/tui --snapshot-update`` and look at the
result before committing it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from cortex_core.errors import RedisUnavailable
from cortex_tui.app import CortexApp

from .conftest import NEVER
from .fixtures import FixedControl, dashboard, run_line, settle

# A guard against a hang, not a speed check: on a busy 2-core machine some
# of these tests took 4 to 8s, close to the 10s and 20s limits they had.
pytestmark = pytest.mark.timeout(60)

SnapCompare = Callable[..., bool]
SIZES = pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])


async def still_cursors(pilot: Pilot[Any]) -> None:
    """Stop text cursors blinking, so the picture does not depend on timing."""
    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False
    await pilot.pause()


@SIZES
def test_dashboard(
    snap_compare: SnapCompare, app: CortexApp, size: tuple[int, int]
) -> None:
    assert snap_compare(app, terminal_size=size, run_before=settle)


@SIZES
def test_enqueue_form(
    snap_compare: SnapCompare, app: CortexApp, size: tuple[int, int]
) -> None:
    async def open_form(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        await pilot.press("n")  # open the enqueue form
        await still_cursors(pilot)

    assert snap_compare(app, terminal_size=size, run_before=open_form)


@SIZES
def test_enqueue_form_errors(
    snap_compare: SnapCompare, app: CortexApp, size: tuple[int, int]
) -> None:
    async def submit_bad_form(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        await pilot.press("n")  # open the enqueue form
        pilot.app.screen.query_one("#count", Input).value = "0"
        await pilot.press("enter")  # submit an empty query and a count of 0
        await still_cursors(pilot)

    assert snap_compare(app, terminal_size=size, run_before=submit_bad_form)


@SIZES
def test_help(snap_compare: SnapCompare, app: CortexApp, size: tuple[int, int]) -> None:
    async def open_help(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        await pilot.press("question_mark")  # open the help

    assert snap_compare(app, terminal_size=size, run_before=open_help)


@SIZES
def test_redis_unreachable_banner(
    snap_compare: SnapCompare,
    app: CortexApp,
    control: FixedControl,
    size: tuple[int, int],
) -> None:
    async def lose_redis(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        control.failure = RedisUnavailable("connection refused by 127.0.0.1:6390")
        dashboard(pilot.app).poll()
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=lose_redis)


def test_scale_to_zero_question(
    snap_compare: SnapCompare, app: CortexApp, control: FixedControl
) -> None:
    control.desired = 1

    async def ask(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        await pilot.press("minus")  # 1 -> 0 asks first

    assert snap_compare(app, terminal_size=(80, 24), run_before=ask)


async def open_view(pilot: Pilot[Any], name: str) -> None:
    """Switch to a view through the command line, as an operator would."""
    await settle(pilot)
    await run_line(pilot, "colon", name)  # :name enter switches the view
    await settle(pilot)


@SIZES
@pytest.mark.parametrize("view", ["tasks", "dead", "workers"])
def test_view(
    snap_compare: SnapCompare, app: CortexApp, size: tuple[int, int], view: str
) -> None:
    async def switch(pilot: Pilot[Any]) -> None:
        await open_view(pilot, view)

    assert snap_compare(app, terminal_size=size, run_before=switch)


@SIZES
def test_task_detail(
    snap_compare: SnapCompare, app: CortexApp, size: tuple[int, int]
) -> None:
    async def open_detail(pilot: Pilot[Any]) -> None:
        await open_view(pilot, "dead")
        await pilot.press("enter")  # open the dead task under the cursor
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=open_detail)


@SIZES
def test_filtered_tasks(
    snap_compare: SnapCompare, app: CortexApp, size: tuple[int, int]
) -> None:
    async def filter_and_sort(pilot: Pilot[Any]) -> None:
        await open_view(pilot, "tasks")
        await run_line(pilot, "slash", "status:pending")  # queued tasks only
        await pilot.press("o", "o", "o")  # sort by the third column, priority
        await pilot.press("slash")  # reopen the line: it shows the filter in force
        await still_cursors(pilot)

    assert snap_compare(app, terminal_size=size, run_before=filter_and_sort)


@SIZES
@pytest.mark.parametrize("key", ["p", "s"], ids=["flow", "scale"])
def test_dialog(
    snap_compare: SnapCompare, app: CortexApp, size: tuple[int, int], key: str
) -> None:
    async def open_dialog(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        await pilot.press(key)  # open the flow-control or the scale dialog
        await settle(pilot)
        await still_cursors(pilot)

    assert snap_compare(app, terminal_size=size, run_before=open_dialog)


@SIZES
def test_read_only_overview(
    snap_compare: SnapCompare, control: FixedControl, size: tuple[int, int]
) -> None:
    app = CortexApp(control, refresh_seconds=NEVER, tz=UTC, read_only=True)
    assert snap_compare(app, terminal_size=size, run_before=settle)


@SIZES
def test_no_color_overview(
    snap_compare: SnapCompare,
    control: FixedControl,
    size: tuple[int, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NO_COLOR", "1")  # read when the app is made
    app = CortexApp(control, refresh_seconds=NEVER, tz=UTC)
    assert app.no_color
    assert snap_compare(app, terminal_size=size, run_before=settle)
