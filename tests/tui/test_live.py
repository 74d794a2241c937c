"""The console on the real control plane, over the suite's loopback Redis."""

from __future__ import annotations

from datetime import UTC

import pytest
from textual.widgets import Input

from cortex_core.config import Settings
from cortex_core.models import Priority
from cortex_core.system import System
from cortex_tui.app import CortexApp
from cortex_tui.widgets.banner import Banner
from cortex_tui.widgets.header import HeaderBar
from cortex_tui.widgets.log import TaskLog
from cortex_tui.widgets.queues import QueuePanel

from .fixtures import dashboard, record_notifications, settle

pytestmark = pytest.mark.timeout(20)


async def test_enqueue_through_the_console_shows_up_in_the_queue(
    settings: Settings,
) -> None:
    async with System.open(settings, start_workers=False) as system:
        app = CortexApp(system.control, refresh_seconds=3600, tz=UTC)
        notes = record_notifications(app)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            header = app.screen.query_one(HeaderBar).header
            assert header is not None and header.namespace == settings.namespace
            assert not app.screen.query_one(Banner).display
            await pilot.press("n")  # open the enqueue form
            app.screen.query_one("#query", Input).value = "list failing pods"
            app.screen.query_one("#count", Input).value = "2"
            await pilot.press("enter")  # submit it
            await settle(pilot)
            assert notes[-1].message.startswith("Enqueued 2 tasks")
            dashboard(app).poll()
            await settle(pilot)
            depths = app.screen.query_one(QueuePanel).depths
            assert depths is not None and depths.pending[Priority.MEDIUM] == 2
            log = app.screen.query_one(TaskLog)
            assert log.row_count >= 2
            assert str(log.get_row_at(0)[1]) == "enqueued"
            await pilot.press("r")  # requeue a pending task: the system refuses
            await settle(pilot)
            assert notes[-1].severity == "error"
