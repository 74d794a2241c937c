"""Limit compliance: four worker processes running Claude against a fake API
that enforces its own limits never draw a 429 from a limit cortex was told
about. The window is shortened to 2 s so that the run takes seconds."""

from __future__ import annotations

from pathlib import Path

from cortex_core.config import Settings
from cortex_core.models import Priority, Task, TaskState
from cortex_core.system import Services
from tests.fakes.anthropic_api import API_KEY, FakeAnthropic, Limits
from tests.helpers import wait_for, worker_process

WINDOW = 2.0
REQUESTS = 16
INPUT_TOKENS = 900
OUTPUT_TOKENS = 1100
MAX_TOKENS = 64
TASKS = 48


async def test_four_workers_never_exceed_the_limits_they_know(
    settings: Settings, services: Services, tmp_path: Path
) -> None:
    fake = FakeAnthropic(
        limits=Limits(
            requests=REQUESTS,
            input_tokens=INPUT_TOKENS,
            output_tokens=OUTPUT_TOKENS,
            window=WINDOW,
        ),
        latency=(0.02, 0.08),
        output_tokens=(35, MAX_TOKENS),
    )
    with fake.running():
        claude = settings.replace(
            executor="claude",
            anthropic_api_key=API_KEY,
            anthropic_base_url=fake.url,
            tools="none",
            rate_window_seconds=WINDOW,
            requests_per_minute=REQUESTS,
            input_tokens_per_minute=INPUT_TOKENS,
            output_tokens_per_minute=OUTPUT_TOKENS,
            tokens_per_minute=0,
            max_tokens=MAX_TOKENS,
            concurrency=8,
        )
        env = {"PATH": "/usr/bin:/bin", **claude.to_env()}
        priorities = list(Priority)
        tasks = [
            Task.create(
                query=f"Check pod status in namespace team-{n}.",
                category="infrastructure",
                priority=priorities[n % 4],
            )
            for n in range(TASKS)
        ]
        await services.queue.enqueue_many(tasks)
        ids = [t.id for t in tasks]

        async def all_done() -> bool:
            records = await services.queue.get_many(ids)
            return all(r is not None and r.state == TaskState.DONE for r in records)

        logs = tmp_path / "workers"
        logs.mkdir()
        with (
            worker_process(env, "w1", log=logs / "w1.log"),
            worker_process(env, "w2", log=logs / "w2.log"),
            worker_process(env, "w3", log=logs / "w3.log"),
            worker_process(env, "w4", log=logs / "w4.log"),
        ):
            await wait_for(all_done, f"{TASKS} tasks done", timeout=90)
    assert fake.limit_429s == 0, "a worker went past a limit it had been told of"
    assert fake.statuses.count(200) == TASKS
    assert 429 not in fake.statuses
    # The limits were binding: calls had to wait for the window.
    stats = await services.limiter.priority_stats()
    assert sum(s.waits for s in stats.values()) > 0
    assert sum(s.calls for s in stats.values()) == TASKS
    # Every worker took part.
    records = await services.queue.get_many(ids)
    workers = {r.result.worker for r in records if r is not None and r.result}
    assert workers == {"w1", "w2", "w3", "w4"}
