"""How many workers a token budget can feed.

Workers beyond what the shared token budget can feed only wait on the
limiter and add cost, so an autoscaler's maximum follows from the budget:

    one busy worker uses   W = concurrency * tokens_per_task * 60 / seconds_per_task
                           tokens per minute
    max useful replicas    ceil(tokens_per_minute / W)

``tokens_per_task`` (input plus output) and ``seconds_per_task`` are the
averages of the workload, as the audit trail or ``cortex status`` show them.
"""

from __future__ import annotations

import math

from cortex_core.errors import ConfigError


def max_useful_replicas(
    *,
    tokens_per_minute: int,
    concurrency: int,
    tokens_per_task: int,
    seconds_per_task: float,
) -> int:
    """The replica count beyond which the budget, not the workers, is the limit."""
    for name, value in (
        ("tokens_per_minute", tokens_per_minute),
        ("concurrency", concurrency),
        ("tokens_per_task", tokens_per_task),
        ("seconds_per_task", seconds_per_task),
    ):
        if value <= 0:
            raise ConfigError(f"{name}: must be above 0, got {value!r}")
    per_worker = concurrency * tokens_per_task * 60.0 / seconds_per_task
    return max(1, math.ceil(tokens_per_minute / per_worker))
