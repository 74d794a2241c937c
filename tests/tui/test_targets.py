"""``:target``: watch another configured deployment without a restart."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC

import pytest

from cortex_core.errors import RedisUnavailable
from cortex_core.snapshot import Control
from cortex_tui.app import CortexApp
from cortex_tui.screens.tasks import TaskListScreen
from cortex_tui.widgets.header import HeaderBar

from .conftest import NEVER
from .fixtures import (
    HEADER,
    SNAPSHOT,
    FixedControl,
    record_notifications,
    run_line,
    settle,
)

# A guard against a hang, not a speed check: on a busy 2-core machine some
# of these tests took 4 to 8s, close to the 10s and 20s limits they had.
pytestmark = pytest.mark.timeout(60)

SIZE = (120, 40)


def other_control() -> FixedControl:
    header = replace(HEADER, redis="rediss://prod.example:6380/0", namespace="prod")
    return FixedControl(snapshot_data=replace(SNAPSHOT, header=header))


async def test_target_switches_keeps_the_view_and_comes_home(
    control: FixedControl,
) -> None:
    other = other_control()
    opened: list[str] = []

    @contextlib.asynccontextmanager
    async def open_prod() -> AsyncIterator[Control]:
        opened.append("open")
        yield other
        opened.append("closed")

    app = CortexApp(control, refresh_seconds=NEVER, tz=UTC, targets={"prod": open_prod})
    notes = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await run_line(pilot, "colon", "tasks")
        await run_line(pilot, "colon", "target")  # list the targets
        await settle(pilot)
        assert notes[-1].message == "targets: [home], prod"
        await run_line(pilot, "colon", "target prod")
        assert isinstance(app.screen, TaskListScreen)  # the same view, on prod
        header = app.screen.query_one(HeaderBar).header
        assert header is not None and header.namespace == "prod"
        assert other.calls_to("tasks")
        assert opened == ["open"]
        await run_line(pilot, "colon", "target home")
        header = app.screen.query_one(HeaderBar).header
        assert header is not None and header.namespace == "cortex"
        assert opened == ["open", "closed"]
        assert not control.closed


async def test_a_target_that_cannot_be_opened_leaves_the_view_alone(
    control: FixedControl,
) -> None:
    @contextlib.asynccontextmanager
    async def unreachable() -> AsyncIterator[Control]:
        raise RedisUnavailable("Redis unreachable at prod.example:6380")
        yield control  # pragma: no cover - never reached

    app = CortexApp(
        control, refresh_seconds=NEVER, tz=UTC, targets={"prod": unreachable}
    )
    notes = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.screen
        await run_line(pilot, "colon", "target prod")
        assert notes[-1].message == (
            "target prod: Redis unreachable at prod.example:6380"
        )
        assert app.screen is screen
        assert app.target == "home"
        await run_line(pilot, "colon", "target nowhere")
        assert notes[-1].message == "target: one of home, prod"
