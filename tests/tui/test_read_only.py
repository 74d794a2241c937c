"""Read-only mode: every action that changes something is hidden from the
footer and the help, and its key or command is refused with a message."""

from __future__ import annotations

from datetime import UTC

import pytest
from textual.widgets import Footer

from cortex_tui.app import VIEWS, CortexApp
from cortex_tui.screens.help import HelpScreen
from cortex_tui.screens.view import ViewScreen
from cortex_tui.widgets.header import HeaderBar

from .conftest import NEVER
from .fixtures import FixedControl, record_notifications, run_line, settle

# A guard against a hang, not a speed check: on a busy 2-core machine some
# of these tests took 4 to 8s, close to the 10s and 20s limits they had.
pytestmark = pytest.mark.timeout(60)

SIZE = (160, 48)
READS = {"snapshot", "tasks", "task_detail", "scale_info"}
"""Calls that only read."""


@pytest.fixture
def read_only_app(control: FixedControl) -> CortexApp:
    return CortexApp(control, refresh_seconds=NEVER, tz=UTC, read_only=True)


def change_keys(view: type[ViewScreen]) -> list[tuple[str, str]]:
    """(key, description) of every binding of ``view`` that changes something."""
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    for cls in view.__mro__:
        for binding in cls.__dict__.get("BINDINGS", ()):
            action = binding.action.partition("(")[0]
            if action in view.CHANGES and binding.key not in seen:
                seen.add(binding.key)
                found.append((binding.key, binding.description))
    return found


def changes(control: FixedControl) -> list[str]:
    return [name for name, _ in control.calls if name not in READS | {"close"}]


def test_every_view_has_changes_to_refuse() -> None:
    assert {key for key, _ in change_keys(VIEWS["dead"])} >= {"r", "R", "d", "p"}
    assert all(change_keys(view) for view in VIEWS.values())


@pytest.mark.parametrize("view", list(VIEWS))
async def test_every_change_key_is_refused_with_a_message(
    read_only_app: CortexApp, control: FixedControl, view: str
) -> None:
    app = read_only_app
    notes = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await run_line(pilot, "colon", view)
        screen = app.screen
        assert isinstance(screen, VIEWS[view])
        for key, what in change_keys(VIEWS[view]):
            await pilot.press(key)
            await settle(pilot)
            assert app.screen is screen, key  # no dialog opened
            assert notes[-1].message == (
                f"read-only mode: {what.lower()} is not allowed"
            ), key
            assert notes[-1].severity == "warning"
        assert changes(control) == []


async def test_every_change_command_is_refused_with_a_message(
    read_only_app: CortexApp, control: FixedControl
) -> None:
    notes = record_notifications(read_only_app)
    async with read_only_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for line in ("pause", "resume high", "drain", "scale 3"):
            await run_line(pilot, "colon", line)
            verb = line.split()[0]
            assert notes[-1].message == f"read-only mode: {verb} is not allowed"
        assert changes(control) == []


async def test_changes_are_hidden_from_the_footer_and_the_help(
    read_only_app: CortexApp, control: FixedControl
) -> None:
    async with read_only_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for view in VIEWS:
            await run_line(pilot, "colon", view)
            footer = read_only_app.screen.query_one(Footer)
            shown = {item.key for item in footer.query("FooterKey")}  # type: ignore[attr-defined]
            hidden = {key for key, _ in change_keys(VIEWS[view])}
            assert not shown & hidden, view
            assert {"colon", "slash"} <= shown
        await pilot.press("question_mark")
        assert isinstance(read_only_app.screen, HelpScreen)
        text = str(read_only_app.screen.query_one("#keys").render())
        assert "Requeue" not in text
        assert "pause [P]" not in text
        assert "tasks" in text


async def test_the_header_says_read_only_and_reading_still_works(
    read_only_app: CortexApp, control: FixedControl
) -> None:
    async with read_only_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "READ-ONLY" in str(read_only_app.screen.query_one(HeaderBar).render())
        await run_line(pilot, "colon", "dead")
        await pilot.press("enter")  # the detail is reading: allowed
        await settle(pilot)
        assert control.calls_to("task_detail")


async def test_without_read_only_the_same_keys_act(
    app: CortexApp, control: FixedControl
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await run_line(pilot, "colon", "dead")
        await pilot.press("r")
        await settle(pilot)
        assert changes(control) == ["requeue"]
