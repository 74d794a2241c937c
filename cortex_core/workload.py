"""The reference workload: the 50-task stress test and its mix."""

from __future__ import annotations

import random

from cortex_core.models import KNOWN_CATEGORIES, Priority, Task

#: Priorities of the reference run as published (they add up to 48 of its 50).
REFERENCE_PRIORITIES = {
    Priority.CRITICAL: 12,
    Priority.HIGH: 12,
    Priority.MEDIUM: 11,
    Priority.LOW: 13,
}
REFERENCE_TASKS = 50
QUERY = (
    "Analyze cluster health for {category} domain. Check pod status, "
    "resource usage, and service availability."
)


def _spread(total: int, weights: list[int]) -> list[int]:
    """Split ``total`` in proportion to ``weights``, largest remainders first."""
    whole = sum(weights)
    raw = [total * w / whole for w in weights]
    counts = [int(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def reference_tasks(
    count: int = REFERENCE_TASKS,
    *,
    seed: int | None = None,
    max_attempts: int = 3,
) -> list[Task]:
    """``count`` tasks in the reference mix, shuffled: 10 of each category at
    50, and priorities in the published proportions.

    The published counts (critical 12, high 12, medium 11, low 13) add up to
    48, not 50; the two left over go by largest remainder of the same
    proportions, so 50 tasks are critical 13, high 12, medium 11, low 14.
    """
    rng = random.Random(seed)
    prio_counts = _spread(count, list(REFERENCE_PRIORITIES.values()))
    priorities = [
        p
        for p, n in zip(REFERENCE_PRIORITIES, prio_counts, strict=True)
        for _ in range(n)
    ]
    cat_counts = _spread(count, [1] * len(KNOWN_CATEGORIES))
    categories = [
        c for c, n in zip(KNOWN_CATEGORIES, cat_counts, strict=True) for _ in range(n)
    ]
    rng.shuffle(priorities)
    rng.shuffle(categories)
    return [
        Task.create(
            query=QUERY.format(category=category),
            category=category,
            priority=priority,
            max_attempts=max_attempts,
        )
        for priority, category in zip(priorities, categories, strict=True)
    ]
