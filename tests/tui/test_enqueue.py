"""The enqueue form: what it sends, and what it refuses without losing input."""

from __future__ import annotations

import pytest
from textual.widgets import Input, Select, Static

from cortex_core.errors import RedisUnavailable, TaskValidationError
from cortex_core.models import Priority
from cortex_tui.app import CortexApp
from cortex_tui.screens.dashboard import DashboardScreen
from cortex_tui.screens.enqueue import ANOTHER, EnqueueScreen, check_request

from .fixtures import FixedControl, record_notifications, settle

# A guard against a hang, not a speed check: on a busy 2-core machine some
# of these tests took 4 to 8s, close to the 10s and 20s limits they had.
pytestmark = pytest.mark.timeout(60)

SIZE = (120, 40)


def form_error(app: CortexApp) -> str:
    return str(app.screen.query_one("#form-error", Static).render())


async def test_n_opens_the_form_and_submit_enqueues(
    app: CortexApp, control: FixedControl
) -> None:
    notes = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("n")  # open the enqueue form
        assert isinstance(app.screen, EnqueueScreen)
        await pilot.press(*"how many pods")  # the query field has the focus
        await pilot.press("tab", "enter")  # move to category and open its list
        await pilot.press("down", "enter")  # pick the second: security
        await pilot.press("tab", "enter")  # move to priority and open its list
        await pilot.press("up", "enter")  # from medium up to high
        await pilot.press("tab")  # onto count: the other-category field is disabled
        await pilot.press("backspace", "3")  # replace the default 1 with 3
        await pilot.press("enter")  # submit from the count field
        await settle(pilot)
        assert control.calls_to("enqueue") == [
            ("how many pods", "security", Priority.HIGH, 3)
        ]
        assert isinstance(app.screen, DashboardScreen)
        assert [n.message for n in notes] == ["Enqueued 3 tasks (00000001 … 00000003)"]


async def test_empty_query_shows_the_error_and_enqueues_nothing(
    app: CortexApp, control: FixedControl
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("n")  # open the enqueue form
        await pilot.press("enter")  # submit it with the query left empty
        await settle(pilot)
        assert isinstance(app.screen, EnqueueScreen)
        assert form_error(app) == "query: must not be empty"
        query = app.screen.query_one("#query", Input)
        assert query.has_class("-invalid")
        assert query.has_focus
        assert control.calls_to("enqueue") == []


async def test_count_zero_is_refused_and_the_input_is_kept(
    app: CortexApp, control: FixedControl
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("n")  # open the enqueue form
        await pilot.press(*"list nodes")  # type a good query
        count = app.screen.query_one("#count", Input)
        count.focus()
        await pilot.press("backspace", "0")  # replace the default 1 with 0
        await pilot.press("enter")  # submit the bad count
        await settle(pilot)
        assert form_error(app) == "count: a whole number from 1 to 1000"
        assert control.calls_to("enqueue") == []
        assert app.screen.query_one("#query", Input).value == "list nodes"
        assert count.value == "0"
        assert count.has_class("-invalid")
        await pilot.press("backspace", "2")  # correct the count to 2
        await pilot.press("enter")  # submit again
        await settle(pilot)
        assert control.calls_to("enqueue") == [
            ("list nodes", "development", Priority.MEDIUM, 2)
        ]


async def test_every_broken_field_is_listed(app: CortexApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("n")  # open the enqueue form
        app.screen.query_one("#count", Input).value = "1001"
        await pilot.press("enter")  # submit an empty query with too big a count
        await settle(pilot)
        assert form_error(app).splitlines() == [
            "query: must not be empty",
            "count: a whole number from 1 to 1000",
        ]


async def test_another_category_is_typed_and_checked(
    app: CortexApp, control: FixedControl
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("n")  # open the enqueue form
        await pilot.press(*"check dns")  # type the query
        app.screen.query_one("#category", Select).value = ANOTHER
        await pilot.pause()
        other = app.screen.query_one("#other", Input)
        assert not other.disabled
        assert other.has_focus
        await pilot.press(*"Net Ops")  # a name the system refuses
        await pilot.press("enter")  # submit it
        await settle(pilot)
        assert form_error(app).startswith("category: 1 to 32 characters")
        assert other.has_class("-invalid")
        assert control.calls_to("enqueue") == []
        other.value = ""
        await pilot.press(*"netops")  # a good name this time
        await pilot.press("enter")  # submit again
        await settle(pilot)
        assert control.calls_to("enqueue") == [
            ("check dns", "netops", Priority.MEDIUM, 1)
        ]


async def test_a_refusal_by_the_system_stays_on_the_form(
    app: CortexApp, control: FixedControl
) -> None:
    control.enqueue_error = RedisUnavailable("redis at 127.0.0.1:6390 refused")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("n")  # open the enqueue form
        await pilot.press(*"count [red]pods[/]")  # markup-like text stays text
        await pilot.press("enter")  # submit while Redis is down
        await settle(pilot)
        assert isinstance(app.screen, EnqueueScreen)
        assert form_error(app) == "redis at 127.0.0.1:6390 refused"
        assert app.screen.query_one("#query", Input).value == "count [red]pods[/]"
        assert not app.screen.query_one("#submit").disabled
        control.enqueue_error = None
        await pilot.press("enter")  # Redis is back: submit again
        await settle(pilot)
        assert isinstance(app.screen, DashboardScreen)
        assert len(control.calls_to("enqueue")) == 2


async def test_escape_closes_the_form_without_enqueueing(
    app: CortexApp, control: FixedControl
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("n")  # open the enqueue form
        await pilot.press(*"never mind")  # type something
        await pilot.press("escape")  # close the form
        await settle(pilot)
        assert isinstance(app.screen, DashboardScreen)
        assert control.calls_to("enqueue") == []


def test_check_request_accepts_a_good_form() -> None:
    request = check_request("q", "security", Priority.LOW, " 7 ")
    assert (request.query, request.category, request.count) == ("q", "security", 7)
    assert request.priority is Priority.LOW


@pytest.mark.parametrize("count_text", ["", "0", "-1", "1001", "two", "1.5"])
def test_check_request_refuses_counts_outside_1_to_1000(count_text: str) -> None:
    with pytest.raises(TaskValidationError, match=r"^count: a whole number"):
        check_request("q", "security", Priority.LOW, count_text)


def test_check_request_passes_on_the_task_rules() -> None:
    with pytest.raises(TaskValidationError) as caught:
        check_request("   ", "Bad", Priority.LOW, "1")
    fields = [part.partition(":")[0] for part in str(caught.value).split("; ")]
    assert fields == ["query", "category"]
