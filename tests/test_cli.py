"""The ``cortex`` command as a user runs it: a subprocess per invocation."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import make_task, run_cli

from cortex_core.backends.local import LocalBackend
from cortex_core.models import Priority, is_task_id
from cortex_core.system import Services

_ENQUEUE = ["enqueue", "Check pod status.", "--category", "cicd"]


async def _dead_task(services: Services, priority: str = "medium") -> str:
    """A task in the dead-letter queue, put there by a real claim and failure."""
    task = make_task(priority=priority, max_attempts=1)
    await services.enqueue([task])
    claim = await services.queue.claim("cli-test", 5000)
    assert claim is not None and claim.task_id == task.id
    assert await services.queue.fail(claim, "model: broken", retryable=False) == "dead"
    return task.id


async def _nothing_enqueued(services: Services) -> None:
    depths = await services.queue.depths()
    assert (depths.total_pending, depths.in_flight, depths.dead) == (0, 0, 0)
    assert [e.kind for e in await services.queue.events()] == []
    found = [k async for k in services.client.scan_iter(services.keys.task("*"))]
    assert found == []


def _error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed command prints, argument errors included."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("cortex"), result.stderr
    return lines[0]


# Enqueue ---------------------------------------------------------------------


async def test_enqueue_prints_the_id_of_a_queued_task(
    services: Services, child_env: dict[str, str]
) -> None:
    """``cortex enqueue`` prints the new task's id; the task waits in its queue."""
    result = run_cli(
        "enqueue",
        "Analyze cluster health.",
        "--category",
        "security",
        "--priority",
        "critical",
        env=child_env,
    )
    assert result.returncode == 0, result.stderr
    task_id = result.stdout.strip()
    assert is_task_id(task_id), result.stdout
    record = await services.queue.get(task_id)
    assert (record.state, record.priority, record.category) == (
        "pending",
        "critical",
        "security",
    )
    assert record.task is not None and record.task.query == "Analyze cluster health."
    pending = await services.client.lrange(services.keys.pending("critical"), 0, -1)
    assert pending == [task_id.encode()]


async def test_enqueue_count_and_json(
    services: Services, child_env: dict[str, str]
) -> None:
    """``--count 3 --json`` enqueues three tasks and prints their ids as JSON."""
    result = run_cli(
        *_ENQUEUE, "--priority", "low", "--count", "3", "--json", env=child_env
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["created"] for r in rows] == [True, True, True]
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == 3
    pending = await services.client.lrange(services.keys.pending("low"), 0, -1)
    assert [p.decode() for p in pending] == ids


async def test_idempotency_key_enqueues_once(
    services: Services, child_env: dict[str, str]
) -> None:
    """The same idempotency key twice names one task and enqueues it once."""
    args = [*_ENQUEUE, "--priority", "high", "--idempotency-key", "deploy-42"]
    first = run_cli(*args, "--json", env=child_env)
    second = run_cli(*args, "--json", env=child_env)
    plain = run_cli(*args, env=child_env)
    assert first.returncode == second.returncode == plain.returncode == 0
    (one,) = json.loads(first.stdout)
    (two,) = json.loads(second.stdout)
    assert one["created"] is True and two["created"] is False
    assert one["id"] == two["id"]
    assert plain.stdout.strip() == f"{one['id']} (already enqueued)"
    depths = await services.queue.depths()
    assert depths.total_pending == 1
    events = await services.queue.events()
    assert [e.kind for e in events] == ["enqueued"]


_BAD_INPUT = [
    pytest.param(["worker", "--name", "w\x1b]0;title\x07"], "--name", id="worker-name"),
    pytest.param(
        ["enqueue", "   ", "--category", "cicd", "--priority", "high"],
        "query",
        id="empty-query",
    ),
    pytest.param(
        ["enqueue", "x" * 20_000, "--category", "cicd", "--priority", "high"],
        "query",
        id="huge-query",
    ),
    pytest.param(
        ["enqueue", "q", "--category", "Not Valid!", "--priority", "high"],
        "category",
        id="bad-category",
    ),
    pytest.param([*_ENQUEUE, "--priority", "urgent"], "--priority", id="priority"),
    pytest.param(
        [*_ENQUEUE, "--priority", "high", "--count", "0"], "--count", id="count-0"
    ),
    pytest.param(
        [*_ENQUEUE, "--priority", "high", "--count", "many"],
        "--count",
        id="count-text",
    ),
    pytest.param(
        [*_ENQUEUE, "--priority", "high", "--count", "2", "--idempotency-key", "k"],
        "--idempotency-key",
        id="key-with-count",
    ),
    pytest.param(["worker", "--latency", "fast"], "latency", id="latency-text"),
    pytest.param(["stress", "--latency", "5:1"], "latency", id="latency-order"),
    pytest.param(
        [*_ENQUEUE, "--priority", "high", "--max-attempts", "0"],
        "max_attempts",
        id="max-attempts",
    ),
]


@pytest.mark.parametrize(("args", "field"), _BAD_INPUT)
async def test_bad_input_fails_clearly(
    services: Services, child_env: dict[str, str], args: list[str], field: str
) -> None:
    """Bad input exits non-zero with one error line naming the field."""
    line = _error_line(run_cli(*args, env=child_env, timeout=30))
    assert field in line, line
    await _nothing_enqueued(services)


async def test_bad_redis_url_scheme_fails_clearly(
    services: Services, child_env: dict[str, str], redis_url: str
) -> None:
    """A Redis URL with an unknown scheme is refused, naming redis_url."""
    bad = redis_url.replace("redis://", "http://", 1)
    result = run_cli(*_ENQUEUE, "--priority", "high", "--redis-url", bad, env=child_env)
    line = _error_line(result)
    assert "redis_url" in line and "http" in line, line
    password = redis_url.split(":")[2].split("@")[0]
    assert password not in result.stderr, "the password was printed"
    await _nothing_enqueued(services)


# Status and requeue ----------------------------------------------------------


async def test_status_json_shows_the_depths(
    services: Services, child_env: dict[str, str]
) -> None:
    """``status --json`` reports pending per priority, in-flight, dead, paused."""
    await _dead_task(services)
    await services.enqueue([make_task(priority="critical")])
    assert await services.queue.claim("holder", 30_000) is not None
    await services.enqueue([make_task(priority=p) for p in ("high", "low", "high")])
    await services.queue.pause(Priority.LOW)
    result = run_cli("status", "--json", env=child_env)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["pending"] == {"critical": 0, "high": 2, "medium": 0, "low": 1}
    assert status["in_flight"] == 1
    assert status["dead"] == 1
    assert status["paused"] == ["low"]
    assert status["namespace"] == services.settings.namespace
    assert status["workers"] == []
    password = services.url.split(":")[2].split("@")[0]
    assert password not in result.stdout


async def test_requeue_a_dead_task(
    services: Services, child_env: dict[str, str]
) -> None:
    """``requeue ID`` puts a dead task back in its queue with fresh attempts."""
    task_id = await _dead_task(services)
    result = run_cli("requeue", task_id, env=child_env)
    assert result.returncode == 0, result.stderr
    assert task_id in result.stdout
    record = await services.queue.get(task_id)
    assert (record.state, record.attempts) == ("pending", 0)
    assert await services.queue.dead_ids() == []
    pending = await services.client.lrange(services.keys.pending("medium"), 0, -1)
    assert pending == [task_id.encode()]


async def test_requeue_all_dead_tasks(
    services: Services, child_env: dict[str, str]
) -> None:
    """``requeue --all`` requeues every dead task."""
    ids = [await _dead_task(services), await _dead_task(services)]
    result = run_cli("requeue", "--all", env=child_env)
    assert result.returncode == 0, result.stderr
    assert "2" in result.stdout
    assert await services.queue.dead_ids() == []
    for record in await services.queue.get_many(ids):
        assert record is not None and record.state == "pending"


async def test_requeue_all_goes_past_a_task_it_cannot_requeue(
    services: Services, child_env: dict[str, str]
) -> None:
    """One dead record with a priority no queue has does not stop the rest:
    they are requeued, it is named, and the exit status says so."""
    bad = await _dead_task(services)
    await services.client.hset(services.keys.task(bad), "priority", "bogus")
    good = [await _dead_task(services), await _dead_task(services)]
    result = run_cli("requeue", "--all", env=child_env)
    assert result.returncode == 1, result.stderr
    assert "requeued 2 dead tasks" in result.stdout
    assert result.stderr.startswith(f"not requeued {bad}: ")
    assert await services.queue.dead_ids() == [bad]
    for record in await services.queue.get_many(good):
        assert record is not None and record.state == "pending"


async def test_requeue_unknown_or_live_task_fails_clearly(
    services: Services, child_env: dict[str, str]
) -> None:
    """Requeueing an unknown id, or a task that is not dead, fails clearly."""
    unknown = "0123456789abcdef01234567"
    line = _error_line(run_cli("requeue", unknown, env=child_env))
    assert unknown in line, line
    await _nothing_enqueued(services)
    task = make_task()
    await services.enqueue([task])
    line = _error_line(run_cli("requeue", task.id, env=child_env))
    assert task.id in line and "pending" in line, line
    record = await services.queue.get(task.id)
    assert (record.state, record.attempts) == ("pending", 0)
    assert (await services.queue.depths()).total_pending == 1


async def test_requeue_by_part_of_an_id(
    services: Services, child_env: dict[str, str]
) -> None:
    """The last 8 characters the console shows are enough; text that fits
    several dead tasks, or is too short, is refused and requeues nothing."""
    ids = [await _dead_task(services) for _ in range(2)]
    # The first 6 digits are the creation time to about 17 minutes: shared.
    line = _error_line(run_cli("requeue", ids[0][:6], env=child_env))
    assert "2 dead tasks fit" in line and ids[0] in line and ids[1] in line, line
    line = _error_line(run_cli("requeue", ids[0][-3:], env=child_env))
    assert "at least 4" in line, line
    assert (await services.queue.depths()).dead == 2
    result = run_cli("requeue", ids[0][-8:], env=child_env)
    assert result.returncode == 0, result.stderr
    assert f"requeued {ids[0]}" in result.stdout
    assert (await services.queue.get(ids[0])).state == "pending"
    assert (await services.queue.get(ids[1])).state == "dead"


# Scale -----------------------------------------------------------------------


@pytest.fixture
def backend(services: Services) -> LocalBackend:
    """The local backend on the test's Redis, to read the count the CLI set."""
    return LocalBackend(
        services.settings,
        redis_url=services.url,
        client=services.client,
        keys=services.keys,
    )


async def test_scale_sets_the_desired_count(
    backend: LocalBackend, child_env: dict[str, str]
) -> None:
    """``scale 3``, ``+1`` and ``-2`` set the count; bad counts change nothing."""
    for arg, expected in (("3", 3), ("+1", 4), ("-2", 2)):
        result = run_cli("scale", arg, env=child_env)
        assert result.returncode == 0, result.stderr
        assert f"desired workers: {expected}" in result.stdout
        assert await backend.read_desired() == expected
    for arg in ("-99", "abc", "65", "+63"):
        line = _error_line(run_cli("scale", arg, env=child_env))
        assert "scale" in line or "worker count" in line, line
        assert await backend.read_desired() == 2, f"scale {arg} changed the count"


async def test_scale_to_zero_asks_for_yes_as_the_console_does(
    backend: LocalBackend, child_env: dict[str, str]
) -> None:
    await backend.set_desired(2)
    for args in (("0",), ("-2",)):
        line = _error_line(run_cli("scale", *args, env=child_env))
        assert line.startswith("cortex: scale: 0 stops every local worker"), line
        assert "--yes" in line
        assert await backend.read_desired() == 2
    result = run_cli("scale", "-2", "--yes", env=child_env)
    assert result.returncode == 0, result.stderr
    assert await backend.read_desired() == 0


def test_a_new_data_folder_is_said_on_stderr(
    tmp_path: Path, child_env: dict[str, str]
) -> None:
    """A mistyped --data-dir must not read as an empty, healthy deployment."""
    env = {k: v for k, v in child_env.items() if k != "CORTEX_REDIS_URL"}
    data = tmp_path / "typo"
    first = run_cli("--data-dir", str(data), "status", env=env)
    assert first.returncode == 0, first.stderr
    assert f"cortex: note: no cortex data in {data}" in first.stderr
    again = run_cli("--data-dir", str(data), "status", env=env)
    assert again.returncode == 0 and "note:" not in again.stderr
