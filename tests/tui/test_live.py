"""The console on the real control plane, over the suite's loopback Redis."""

from __future__ import annotations

from datetime import UTC

import pytest
from textual.widgets import Input

from cortex_core.config import Settings
from cortex_core.models import Priority
from cortex_core.system import System
from cortex_tui.app import CortexApp
from cortex_tui.screens.detail import TaskDetailScreen
from cortex_tui.widgets.banner import Banner
from cortex_tui.widgets.header import HeaderBar
from cortex_tui.widgets.log import TaskLog
from cortex_tui.widgets.queues import QueuePanel
from cortex_tui.widgets.tasks import TaskTable

from .fixtures import dashboard, record_notifications, run_line, settle

# A guard against a hang, not a speed check: on a busy 2-core machine some
# of these tests took 4 to 8s, close to the 10s and 20s limits they had.
pytestmark = pytest.mark.timeout(60)


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


async def test_r_requeues_a_dead_task_through_the_real_queue(
    settings: Settings,
) -> None:
    """A task dead-lettered in Redis goes back to its queue when r is pressed
    on its row."""
    async with System.open(settings, start_workers=False) as system:
        queue = system.services.queue
        [task_id] = await system.control.enqueue("list pods", "cicd", Priority.LOW)
        claim = await queue.claim("test", 5000)
        assert claim is not None and claim.task_id == task_id
        assert await queue.fail(claim, "model: refused", retryable=False) == "dead"
        app = CortexApp(system.control, refresh_seconds=3600, tz=UTC)
        notes = record_notifications(app)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            log = app.screen.query_one(TaskLog)
            assert log.selected_task_id == task_id  # the dead event is newest
            await pilot.press("r")  # requeue the dead task under the cursor
            await settle(pilot)
            assert notes[-1].severity == "information"
        record = await queue.get(task_id)
        assert (record.state, record.attempts) == ("pending", 0)


async def test_minus_to_zero_asks_then_sets_the_desired_count(
    settings: Settings,
) -> None:
    """With one local worker, - asks before going to 0, and y sets the count
    the supervisor reads from Redis."""
    one = settings.replace(workers=1)
    async with System.open(one, start_workers=True) as system:
        backend = system.backend
        assert backend is not None
        app = CortexApp(system.control, refresh_seconds=3600, tz=UTC)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            await pilot.press("minus")  # one fewer: 1 -> 0 needs a yes
            await settle(pilot)
            assert await backend.read_desired() == 1
            await pilot.press("y")  # confirm scaling to zero
            await settle(pilot)
            assert await backend.read_desired() == 0
            await pilot.press("plus")  # and back to one
            await settle(pilot)
            assert await backend.read_desired() == 1


async def test_incident_keys_on_the_real_queue(settings: Settings) -> None:
    """Cancel a queued task in :tasks, see it with its reason in :dead,
    open its detail, requeue it, and pause a priority: all in Redis."""
    async with System.open(settings, start_workers=False) as system:
        queue = system.services.queue
        [first, second] = await system.control.enqueue(
            "list pods", "cicd", Priority.LOW, count=2
        )
        app = CortexApp(system.control, refresh_seconds=3600, tz=UTC)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            await run_line(pilot, "colon", "tasks")
            table = app.screen.query_one(TaskTable)
            assert {r.task_id for r in table.task_rows} == {first, second}
            await pilot.press("slash", *first[-8:], "enter")  # just the first one
            await settle(pilot)
            assert [r.task_id for r in table.task_rows] == [first]
            await pilot.press("c", "y")  # cancel it, after the question
            await settle(pilot)
            assert (await queue.get(first)).state == "dead"
            await run_line(pilot, "colon", "dead")
            table = app.screen.query_one(TaskTable)
            [row] = table.task_rows
            assert (row.task_id, row.reason) == (first, "cancelled by the operator")
            await pilot.press("enter")  # the detail, with its history
            await settle(pilot)
            assert isinstance(app.screen, TaskDetailScreen)
            detail = app.screen.detail
            assert detail is not None
            assert [h.kind for h in detail.history][:1] == ["enqueued"]
            await pilot.press("escape", "r")  # back, and requeue it
            await settle(pilot)
            assert (await queue.get(first)).state == "pending"
            await run_line(pilot, "colon", "pause low")
            assert "low" in (await queue.depths()).paused
            assert await queue.claim("test", 5000) is None  # low is paused
