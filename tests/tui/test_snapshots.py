"""Pictures of the console at 80x24 and 120x40, compared with approved SVGs.

Update them with ``pytest tests/tui --snapshot-update`` and look at the
result before committing it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from cortex_core.errors import RedisUnavailable
from cortex_tui.app import CortexApp

from .fixtures import FixedControl, dashboard, settle

pytestmark = pytest.mark.timeout(30)

SnapCompare = Callable[..., bool]
SIZES = pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])


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
