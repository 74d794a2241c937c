"""What needs the operator's attention, read off one snapshot's parts."""

from __future__ import annotations

from collections.abc import Sequence

from cortex_core.models import PRIORITIES
from cortex_core.snapshot import QueueDepths, TokenSeries, WorkerRow

RATE_LIMITED_SHARE = 0.95
"""Tokens per minute at this share of the limit count as rate-limited."""


def alerts(
    *,
    queues: QueueDepths,
    tokens: TokenSeries,
    workers: Sequence[WorkerRow],
    queue_age_limit: float,
    error: str | None = None,
) -> list[str]:
    """Short alert texts, most urgent first; empty when all is well."""
    found: list[str] = []
    if error is not None:
        found.append("Redis reconnecting")
    missing = [w.name for w in workers if w.state == "missing"]
    if missing:
        noun = "worker" if len(missing) == 1 else "workers"
        found.append(f"{len(missing)} {noun} missing heartbeats")
    series = tokens.tokens_per_minute
    if tokens.limit > 0 and series and series[-1] >= RATE_LIMITED_SHARE * tokens.limit:
        found.append(f"rate-limited ({series[-1]:,} of {tokens.limit:,} tok/min)")
    for priority in PRIORITIES:
        age = queues.oldest.get(priority)
        if age is not None and age >= queue_age_limit:
            found.append(f"{priority} waiting {age_text(age)}")
    if "drain" in queues.paused:
        state = "drained" if queues.in_flight == 0 else f"{queues.in_flight} running"
        found.append(f"draining ({state})")
    return found


def age_text(seconds: float) -> str:
    """``42s``, ``7m05s`` or ``3h12m``: short enough for a header."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
