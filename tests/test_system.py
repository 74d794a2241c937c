"""System wiring: the demo load and the control plane's snapshot."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from cortex_core.config import Settings
from cortex_core.models import Priority
from cortex_core.system import System
from cortex_core.workload import reference_tasks


async def test_demo_load_is_the_reference_workload_then_a_trickle(
    settings: Settings,
) -> None:
    """The demo enqueues the 50-task reference mix, then keeps adding tasks."""
    async with System.open(settings, start_workers=False) as system:
        system.start_demo_load(trickle_seconds=0.05)
        queue = system.services.queue
        deadline = time.monotonic() + 15
        while (await queue.depths()).total_pending < 53:
            assert time.monotonic() < deadline, "the demo load did not grow"
            await asyncio.sleep(0.05)
        events = await queue.events(after="0-0", count=1000)
    first = [e for e in events if e.kind == "enqueued"][:50]
    assert Counter(e.priority for e in first) == {
        "critical": 13,
        "high": 12,
        "medium": 11,
        "low": 14,
    }
    assert set(Counter(e.category for e in first).values()) == {10}


def test_reference_mix_scales_with_the_count() -> None:
    """Other task counts keep the reference proportions and are shuffled."""
    tasks = reference_tasks(100, seed=1)
    by_priority = Counter(t.priority for t in tasks)
    assert by_priority == {
        Priority.CRITICAL: 25,
        Priority.HIGH: 25,
        Priority.MEDIUM: 23,
        Priority.LOW: 27,
    }
    assert [t.priority for t in tasks] != sorted(t.priority for t in tasks)


async def test_snapshot_reads_depths_workers_tokens_and_log(
    settings: Settings,
) -> None:
    """One snapshot carries the header, depths, token series and the log."""
    async with System.open(settings, start_workers=False) as system:
        await system.control.enqueue("check nodes", "infrastructure", Priority.HIGH, 3)
        snap = await system.control.snapshot(log_limit=10)
    assert snap.header.namespace == settings.namespace
    assert snap.header.simulated is True
    assert "@" not in snap.header.redis  # never the password
    assert snap.queues.pending[Priority.HIGH] == 3
    assert [e.kind for e in snap.log] == ["enqueued"] * 3
    assert snap.tokens.limit == settings.tokens_per_minute
    assert len(snap.tokens.tokens_per_minute) == 120
    assert snap.error is None
