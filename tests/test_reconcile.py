"""Audit reconciliation: ``verify`` lists every difference between Redis and
the audit trail; ``restore`` rebuilds what Redis lost without running a done
task again. Against the real Redis, with a real worker."""

from __future__ import annotations

import json

from helpers import make_task, make_worker, run_cli, running, wait_for

from cortex_core import reconcile
from cortex_core.executor import Execution
from cortex_core.models import Task
from cortex_core.queue import CANCEL_REASON
from cortex_core.system import ControlPlane, Services


class CountingExecutor:
    """Answers at once and remembers which tasks it ran."""

    model = "counting"
    simulated = True

    def __init__(self) -> None:
        self.ran: list[str] = []

    def estimate(self, task: Task) -> tuple[int, int]:
        return 10, 10

    async def run(self, task: Task) -> Execution:
        self.ran.append(task.id)
        return Execution("ok", 10, 10, self.model, True)


async def _lose_redis(services: Services) -> None:
    """Every key of this test's namespace gone, as after FLUSHALL."""
    keys = [k async for k in services.client.scan_iter(f"{services.keys.tag}*")]
    if keys:
        await services.client.delete(*keys)


async def _history(services: Services) -> dict[str, list[str]]:
    """A done task, a dead task, two pending tasks (one of them started once,
    then its worker lost the lease), and a paused priority holding them."""
    done, dead = make_task("security"), make_task("cicd", max_attempts=1)
    await services.enqueue([done])
    worker = make_worker(services, CountingExecutor())
    async with running(worker):
        await wait_for(
            lambda: _state(services, done.id, "done"), "the first task to be done"
        )
    await services.enqueue([dead])
    claim = await services.queue.claim("w", 30_000)
    assert claim is not None and claim.task_id == dead.id
    assert await services.queue.fail(claim, "model: refused", retryable=False)
    services.audit.record(dead.id, "claimed", attempt=1, worker="w")
    services.audit.record(dead.id, "dead", worker="w", reason="model: refused")
    waiting = [make_task("inventory", "low"), make_task("cicd", "critical")]
    await services.enqueue(waiting)
    started = await services.queue.claim("w", 30_000)
    assert started is not None and started.task_id == waiting[1].id
    services.audit.record(started.task_id, "claimed", attempt=1, worker="w")
    assert services.audit.flush(timeout=10)
    return {
        "done": [done.id],
        "dead": [dead.id],
        "pending": [waiting[0].id],
        "running": [waiting[1].id],
    }


async def _state(services: Services, task_id: str, state: str) -> bool:
    return (await services.queue.get(task_id)).state == state


async def test_verify_agrees_on_a_consistent_history(services: Services) -> None:
    """After real enqueues, claims, a completion and a dead letter, Redis and
    the trail agree."""
    await _history(services)
    report = await reconcile.verify(services.queue, services.audit)
    assert report.differences == []
    assert report.ok and report.tasks_in_redis == report.tasks_in_trail == 4


async def test_an_operators_cancel_and_delete_are_not_differences(
    services: Services,
) -> None:
    """A task cancelled from the console is dead with the cancel's reason in
    both places; a dead task deleted from the console is gone from Redis as
    the trail says it should be, and restore does not bring it back."""
    await _history(services)
    control = ControlPlane(services, None)
    kept, dropped = make_task("cicd", "low"), make_task("security", "low")
    await services.enqueue([kept, dropped])
    await control.cancel(kept.id)
    await control.cancel(dropped.id)
    await control.delete_dead(dropped.id)
    assert services.audit.flush(timeout=10)
    report = await reconcile.verify(services.queue, services.audit)
    assert report.differences == [], report.render()
    assert report.deleted == 1 and "1 deleted" in report.render()
    await _lose_redis(services)
    restored = await reconcile.restore(services.queue, services.audit)
    assert restored.restored == {"pending": 2, "dead": 2, "done": 1}
    assert restored.skipped == []
    back = await services.queue.get(kept.id)
    assert (back.state, back.reason) == ("dead", CANCEL_REASON)
    assert (await services.queue.rows([dropped.id])) == []
    assert (await reconcile.verify(services.queue, services.audit)).ok


async def test_verify_lists_every_difference(services: Services) -> None:
    """Each kind of disagreement is listed with the task and both states."""
    ids = await _history(services)
    client, keys = services.client, services.keys
    stray = make_task()
    await services.queue.enqueue(stray)  # in Redis, never in the trail
    await client.delete(keys.task(ids["done"][0]))  # a recent result lost
    await client.hset(keys.task(ids["dead"][0]), "state", "done")  # states differ
    await client.rpush(keys.pending("low"), "0123456789abcdef01234567")  # orphan
    report = await reconcile.verify(services.queue, services.audit)
    found = {(d.task_id, d.problem) for d in report.differences}
    assert (stray.id, "missing from the trail") in found
    assert (ids["done"][0], "missing from Redis") in found
    assert (ids["dead"][0], "states disagree") in found
    assert (ids["dead"][0], "a done record in dead") in found
    assert ("0123456789abcdef01234567", "pending:low names no task record") in found
    assert len(report.differences) == 5, report.render()
    text = report.render()
    assert "5 differences" in text and stray.id in text


async def test_restore_rebuilds_queues_and_never_reruns_done_tasks(
    services: Services,
) -> None:
    """After Redis lost everything, restore brings pending and running tasks
    back to their queues, the dead one to the dead-letter queue, and the done
    one as done; a worker then runs exactly the unfinished ones."""
    ids = await _history(services)
    await _lose_redis(services)
    assert not (await reconcile.verify(services.queue, services.audit)).ok
    report = await reconcile.restore(services.queue, services.audit)
    assert report.restored == {"pending": 2, "dead": 1, "done": 1}
    assert report.skipped == []
    assert (await reconcile.verify(services.queue, services.audit)).ok
    depths = await services.queue.depths()
    assert depths.pending["low"] == 1 and depths.pending["critical"] == 1
    assert depths.dead == 1 and depths.in_flight == 0
    dead = await services.queue.get(ids["dead"][0])
    assert dead.reason == "model: refused"
    running_before = await services.queue.get(ids["running"][0])
    assert running_before.attempts == 0, "Redis lost that attempt, not the task"
    again = await reconcile.restore(services.queue, services.audit)
    assert again.restored == {} and again.present == 4
    executor = CountingExecutor()
    async with running(make_worker(services, executor)):
        await wait_for(
            lambda: _state(services, ids["pending"][0], "done"), "the queue to empty"
        )
    assert sorted(executor.ran) == sorted(ids["pending"] + ids["running"])
    assert services.audit.flush(timeout=10)
    assert (await reconcile.verify(services.queue, services.audit)).ok


async def test_restore_keeps_the_idempotency_key(services: Services) -> None:
    """A task enqueued with a key is still found by that key after a restore."""
    task = Task.create(
        query="Check pods.", category="cicd", priority="high", idempotency_key="k1"
    )
    await services.enqueue([task])
    assert services.audit.flush(timeout=10)
    await _lose_redis(services)
    await reconcile.restore(services.queue, services.audit)
    again = Task.create(
        query="Check pods.", category="cicd", priority="high", idempotency_key="k1"
    )
    assert await services.queue.enqueue(again) == (task.id, False)


async def test_restore_skips_a_task_without_its_enqueued_record(
    services: Services,
) -> None:
    """A trail that never saw a task's payload cannot rebuild it: it is named."""
    services.audit.record("0123456789abcdef01234567", "claimed", attempt=1)
    assert services.audit.flush(timeout=10)
    report = await reconcile.restore(services.queue, services.audit)
    assert [d.task_id for d in report.skipped] == ["0123456789abcdef01234567"]
    assert "no enqueued record" in report.skipped[0].problem


async def test_cli_verify_and_restore(
    services: Services, child_env: dict[str, str]
) -> None:
    """``cortex audit verify`` exits 1 and lists the differences when Redis
    lost its data; ``cortex restore`` rebuilds it; verify then exits 0."""
    ids = await _history(services)
    await _lose_redis(services)
    result = run_cli("audit", "verify", env=child_env)
    assert result.returncode == 1, result.stderr
    assert "4 differences" in result.stdout and ids["pending"][0] in result.stdout
    result = run_cli("audit", "verify", "--json", env=child_env)
    data = json.loads(result.stdout)
    assert data["ok"] is False and len(data["differences"]) == 4
    dry = run_cli("restore", "--dry-run", "--json", env=child_env)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["restored"] == {"pending": 2, "dead": 1, "done": 1}
    assert (await services.queue.depths()).total_pending == 0
    result = run_cli("restore", env=child_env)
    assert result.returncode == 0, result.stderr
    assert "restored: 1 dead, 1 done, 2 pending" in result.stdout
    result = run_cli("audit", "verify", env=child_env)
    assert result.returncode == 0, result.stdout
    assert "agree" in result.stdout


async def test_each_namespace_reconciles_its_own_trail(
    services: Services, child_env: dict[str, str]
) -> None:
    """Another namespace on the same data folder sees none of this one's
    tasks: its verify agrees and its restore would add nothing."""
    await _history(services)
    assert services.audit.flush(timeout=10)
    other = {**child_env, "CORTEX_NAMESPACE": services.settings.namespace + "-b"}
    result = run_cli("audit", "verify", env=other)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "agree" in result.stdout
    dry = run_cli("restore", "--dry-run", "--json", env=other)
    assert dry.returncode == 0, dry.stderr
    assert sum(json.loads(dry.stdout)["restored"].values()) == 0
