"""The console's operations on a real Redis: lists, detail, flow control,
dead letters, aging, alerts and read-only mode."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from cortex_core.errors import InvalidTransition, ReadOnlyMode, UnknownTask
from cortex_core.models import Priority, Task, TaskResult
from cortex_core.queue import TaskQueue
from cortex_core.snapshot import TaskFilter
from cortex_core.system import ControlPlane, Services

pytestmark = pytest.mark.timeout(60)

LEASE_MS = 30_000


def task(priority: str = "medium", category: str = "security", **kw: Any) -> Task:
    return Task.create(
        query=kw.pop("query", f"Check {category} things."),
        category=category,
        priority=priority,
        **kw,
    )


@pytest.fixture
def control(services: Services) -> ControlPlane:
    return ControlPlane(services, None)


#: The aging period of ``aged_queue``: long enough that the time a test takes
#: between backdating a task and claiming never moves it across a level.
AGING_MS = 600_000


@pytest.fixture
async def aged_queue(services: Services) -> AsyncIterator[TaskQueue]:
    yield TaskQueue(services.client, services.keys, aging_ms=AGING_MS)


async def backdate(services: Services, t: Task, periods: float) -> None:
    """Make ``t`` look enqueued ``periods`` aging periods ago (server clock)."""
    seconds, micros = await services.client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    enqueued_at = now_ms - int(periods * AGING_MS)
    await services.client.hset(services.keys.task(t.id), "enqueued_at", enqueued_at)


# Filters ---------------------------------------------------------------------


def test_filter_terms_and_text() -> None:
    """Terms narrow by field, commas list values, the rest is free text."""
    f = TaskFilter.parse("priority:high,low status:dead category:cicd kubectl tim")
    assert f.priorities == {"high", "low"}
    assert f.states == {"dead"}
    assert f.categories == {"cicd"}
    assert f.text == "kubectl tim"
    assert TaskFilter.parse("").empty


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("priority:urgent", "priority: urgent is not one of"),
        ("status:lost", "status: lost is not one of"),
        ("owner:me", "unknown filter term owner:"),
        ("priority:", "priority: needs a value"),
    ],
)
def test_filter_errors_name_the_term(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        TaskFilter.parse(text)


# Lists -----------------------------------------------------------------------


async def test_tasks_list_running_pending_dead_in_order(
    services: Services, control: ControlPlane
) -> None:
    """Running first, pending by priority, then dead; filters narrow it."""
    queue = services.queue
    low, high, crit, gone = task("low"), task("high"), task("critical"), task("low")
    await services.enqueue([low, high, crit, gone])
    claim = await queue.claim("w1", LEASE_MS)
    assert claim is not None and claim.task_id == crit.id
    await queue.cancel(gone.id, "not needed")
    page = await control.tasks("tasks", TaskFilter())
    assert [(r.task_id, r.state) for r in page.rows] == [
        (crit.id, "running"),
        (high.id, "pending"),
        (low.id, "pending"),
        (gone.id, "dead"),
    ]
    assert page.total == 4
    dead = await control.tasks("dead", TaskFilter())
    assert [(r.task_id, r.reason) for r in dead.rows] == [(gone.id, "not needed")]
    assert page.exact
    only_low = await control.tasks("tasks", TaskFilter.parse("priority:low"))
    assert [r.task_id for r in only_low.rows] == [low.id, gone.id]
    # Running and dead tasks are not indexed by priority: the total is the
    # length of the list the filter looked through, and the page says so.
    assert (only_low.total, only_low.exact) == (3, False)
    pending_low = await control.tasks(
        "tasks", TaskFilter.parse("priority:low status:pending")
    )
    assert [r.task_id for r in pending_low.rows] == [low.id]
    assert (pending_low.total, pending_low.exact) == (1, True)
    text = await control.tasks("tasks", TaskFilter.parse(high.id[-8:]))
    assert [r.task_id for r in text.rows] == [high.id]
    assert (text.total, text.exact) == (4, False)


async def test_done_tasks_come_from_the_event_stream(
    services: Services, control: ControlPlane
) -> None:
    t = task("high")
    await services.enqueue([t])
    claim = await services.queue.claim("w1", LEASE_MS)
    assert claim is not None
    result = TaskResult(task_id=t.id, ok=True, output="fine", model="m", simulated=True)
    assert await services.queue.complete(claim, result)
    page = await control.tasks("tasks", TaskFilter.parse("status:done"))
    assert [(r.task_id, r.state) for r in page.rows] == [(t.id, "done")]


async def test_pages_walk_the_pending_lists(
    services: Services, control: ControlPlane
) -> None:
    """Offsets run across the priority lists without gaps or repeats."""
    tasks = [task(p) for p in ("critical", "high", "medium", "low") for _ in range(7)]
    await services.enqueue(tasks)
    seen: list[str] = []
    offset = 0
    while True:
        page = await control.tasks("tasks", TaskFilter(), offset=offset, limit=5)
        if not page.scanned:
            break
        seen += [r.task_id for r in page.rows]
        offset += page.scanned
    assert seen == [t.id for t in tasks]


async def test_filtered_pages_skip_no_match(
    services: Services, control: ControlPlane
) -> None:
    """A filtered page reads a wider window than it shows; the next page starts
    after the last row shown, so matches beyond the limit are not skipped."""
    tasks = [task("medium", category=c) for _ in range(12) for c in ("cicd", "dev")]
    await services.enqueue(tasks)
    wanted = [t.id for t in tasks if t.category == "cicd"]
    seen: list[str] = []
    offset = 0
    only = TaskFilter.parse("category:cicd")
    while True:
        page = await control.tasks("tasks", only, offset=offset, limit=5)
        if not page.scanned:
            break
        assert len(page.rows) <= 5 and not page.exact
        seen += [r.task_id for r in page.rows]
        offset += page.scanned
    assert seen == wanted


async def test_snapshot_and_page_round_trips_do_not_grow_with_the_backlog(
    services: Services, control: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refresh costs the same number of round trips for 10 tasks or 5,000."""
    pool = services.client.connection_pool
    trips = 0
    original = pool.get_connection

    async def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal trips
        trips += 1
        return await original(*args, **kwargs)

    monkeypatch.setattr(pool, "get_connection", counting)

    async def cost() -> int:
        nonlocal trips
        trips = 0
        await control.snapshot(200)
        await control.tasks("tasks", TaskFilter(), limit=200)
        await control.tasks("tasks", TaskFilter.parse("text category:cicd"))
        return trips

    await services.enqueue([task("low") for _ in range(10)])
    await cost()  # the first use loads the Lua scripts into a fresh server
    small = await cost()
    for _ in range(5):
        await services.enqueue([task("medium") for _ in range(1000)])
    assert await cost() == small


# Detail ----------------------------------------------------------------------


async def test_detail_has_history_result_and_audit_file(
    services: Services, control: ControlPlane
) -> None:
    t = task("high", query="How many pods restart in kube-system?")
    await services.enqueue([t])
    claim = await services.queue.claim("w7", LEASE_MS)
    assert claim is not None
    result = TaskResult(
        task_id=t.id,
        ok=True,
        output="line\n" * 500,
        model="m",
        simulated=True,
        input_tokens=90,
        output_tokens=30,
        worker="w7",
    )
    await services.queue.complete(claim, result)
    services.audit.flush()
    detail = await control.task_detail(t.id)
    assert detail.query == t.query
    assert [h.kind for h in detail.history] == ["enqueued", "claimed", "done"]
    assert detail.history[1].worker == "w7"
    assert detail.result is not None and detail.result.total_tokens == 120
    assert len(detail.audit_files) == 1
    assert detail.audit_files[0].startswith(str(services.settings.audit_dir))
    with pytest.raises(UnknownTask):
        await control.task_detail("0" * 24)


# Flow control and dead letters -----------------------------------------------


async def test_cancel_only_pending_and_it_becomes_requeueable(
    services: Services, control: ControlPlane
) -> None:
    a, b = task("low"), task("low")
    await services.enqueue([a, b])
    await control.cancel(a.id)
    depths = await services.queue.depths()
    assert depths.pending[Priority.LOW] == 1 and depths.dead == 1
    claim = await services.queue.claim("w1", LEASE_MS)
    assert claim is not None and claim.task_id == b.id
    with pytest.raises(InvalidTransition, match="only pending"):
        await control.cancel(b.id)
    with pytest.raises(UnknownTask):
        await control.cancel("f" * 24)
    await control.requeue(a.id)
    assert (await services.queue.get(a.id)).state == "pending"


async def test_delete_and_requeue_dead_by_filter(
    services: Services, control: ControlPlane
) -> None:
    tasks = [task("high", "cicd"), task("low", "cicd"), task("low", "security")]
    alive = task("low")
    await services.enqueue([*tasks, alive])
    for t in tasks:
        await services.queue.cancel(t.id, "test")
    with pytest.raises(InvalidTransition, match="only dead"):
        await control.delete_dead(alive.id)
    await control.delete_dead(tasks[0].id)
    with pytest.raises(UnknownTask):
        await control.delete_dead(tasks[0].id)
    remaining = await control.tasks("dead", TaskFilter())
    assert {r.task_id for r in remaining.rows} == {tasks[1].id, tasks[2].id}
    assert await control.requeue_dead(TaskFilter.parse("category:cicd")) == 1
    assert (await services.queue.get(tasks[1].id)).state == "pending"
    assert (await services.queue.get(tasks[2].id)).state == "dead"
    with pytest.raises(UnknownTask):
        await services.queue.get(tasks[0].id)


async def test_drain_stops_claims_until_resume(
    services: Services, control: ControlPlane
) -> None:
    await services.enqueue([task("critical")])
    await control.drain()
    snap = await control.snapshot()
    assert "drain" in snap.queues.paused
    assert any(a.startswith("draining") for a in snap.alerts)
    assert await services.queue.claim("w1", LEASE_MS) is None
    await control.pause(Priority.CRITICAL)
    await control.resume(Priority.CRITICAL)
    assert await services.queue.claim("w1", LEASE_MS) is None  # still draining
    await control.pause(Priority.CRITICAL)
    await control.resume()  # everything: the drain and critical's own pause
    assert await services.queue.claim("w1", LEASE_MS) is not None


async def test_oldest_age_and_queue_age_alert(
    services: Services, settings: Any
) -> None:
    services.settings = replace(settings, alert_queue_age_seconds=1.0)
    control = ControlPlane(services, None)
    await services.enqueue([task("medium")])
    await asyncio.sleep(1.1)
    snap = await control.snapshot()
    assert set(snap.queues.oldest) == {Priority.MEDIUM}
    assert snap.queues.oldest[Priority.MEDIUM] >= 1.0
    assert any(a.startswith("medium waiting") for a in snap.alerts)


# Aging -----------------------------------------------------------------------


async def test_without_aging_a_flood_of_critical_starves_low(
    services: Services,
) -> None:
    old = task("low")
    await services.enqueue([old])
    await backdate(services, old, 3.5)
    await services.enqueue([task("critical") for _ in range(3)])
    claim = await services.queue.claim("w1", LEASE_MS)
    assert claim is not None and claim.priority == Priority.CRITICAL


async def test_aging_lifts_a_task_one_level_per_period(
    services: Services, aged_queue: TaskQueue
) -> None:
    """A low task 2.5 aging periods old counts as high, so it goes before newer
    high tasks but after critical ones; a medium one as old, as critical, and
    then before newer critical ones.

    The tasks are backdated rather than waited for: with a short period and
    a sleep, a test slowed by 100 ms would see the low task one level higher.
    """
    old = task("low")
    await services.enqueue([old])
    await backdate(services, old, 2.5)
    crit, high = task("critical"), task("high")
    await services.enqueue([high, crit])
    first = await aged_queue.claim("w1", LEASE_MS)
    second = await aged_queue.claim("w1", LEASE_MS)
    third = await aged_queue.claim("w1", LEASE_MS)
    assert [c.task_id for c in (first, second, third) if c] == [
        crit.id,
        old.id,
        high.id,
    ]
    assert second is not None and second.priority == Priority.LOW
    late = task("medium")
    await services.enqueue([late])
    await backdate(services, late, 2.5)
    await services.enqueue([task("critical")])
    claim = await aged_queue.claim("w1", LEASE_MS)
    assert claim is not None and claim.task_id == late.id


async def test_aging_respects_paused_levels(
    services: Services, aged_queue: TaskQueue
) -> None:
    old = task("low")
    await services.enqueue([old])
    await services.queue.pause(Priority.LOW)
    await backdate(services, old, 3.5)
    assert await aged_queue.claim("w1", LEASE_MS) is None


# Read-only -------------------------------------------------------------------


async def test_read_only_refuses_every_change(
    services: Services, settings: Any
) -> None:
    services.settings = replace(settings, read_only=True)
    control = ControlPlane(services, None)
    t = task("low")
    await services.enqueue([t])
    changes = [
        control.enqueue("q", "cicd", Priority.LOW),
        control.requeue(t.id),
        control.requeue_dead(TaskFilter()),
        control.delete_dead(t.id),
        control.cancel(t.id),
        control.pause(),
        control.resume(),
        control.drain(),
        control.scale(1),
        control.scale_to(0),
    ]
    for change in changes:
        with pytest.raises(ReadOnlyMode, match="read-only mode"):
            await change
    assert (await services.queue.get(t.id)).state == "pending"
    assert (await control.tasks("tasks", TaskFilter())).total == 1
