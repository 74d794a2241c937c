"""What the console shows about the model API and the shared budget: alerts
the executor raised, a pause a 429 set, the limits the API reported, what each
priority used and waited, result-cache hits, and the tasks that wait on a
limit with their next attempt time. Read through the modules that own the
keys (limiter, heartbeat, the result cache); this module owns none."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cortex_core.heartbeat import WorkerInfo
from cortex_core.limiter import Alert, PriorityStats, RateLimiter
from cortex_core.models import PRIORITIES
from cortex_core.printable import printable_fields

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
@printable_fields
class RateLimitedTask:
    """A task held by a limit (the shared budget, a 429 pause or a backoff)."""

    task_id: str
    worker: str
    next_attempt: float
    """Server time of its next try."""


@dataclass(frozen=True)
@printable_fields
class ApiStatus:
    alerts: Sequence[Alert] = ()
    """Newest first: a 429 that waiting will not clear, a refused key."""
    paused_until: float | None = None
    """Every worker holds its calls until then (a 429's retry-after)."""
    learned_limits: Mapping[str, int] = field(default_factory=dict)
    """Per-window limits the API reported, by dimension."""
    priorities: Mapping[str, PriorityStats] = field(default_factory=dict)
    """Calls, tokens, waits and time waited per priority (last day)."""
    held_share: float = 0.0
    """Share of each limit only critical and high tasks may use."""
    cache_hits: int = 0
    cache_misses: int = 0
    rate_limited: Sequence[RateLimitedTask] = ()
    """Soonest next attempt first."""

    def notices(self, now: float) -> list[str]:
        """One-line remarks for the console's banner, most urgent first; times
        are relative to ``now`` (server time)."""
        out: list[str] = []
        for alert in self.alerts:
            if now - alert.at <= ALERT_SHOWN_SECONDS:
                out.append(f"{alert.message} ({_span(now - alert.at)} ago)")
        if self.paused_until is not None and self.paused_until > now:
            out.append(
                "the API asked to wait: every worker paused for "
                f"{_span(self.paused_until - now)} more"
            )
        if self.rate_limited:
            n = len(self.rate_limited)
            noun = "task waits" if n == 1 else "tasks wait"
            soonest = max(0.0, self.rate_limited[0].next_attempt - now)
            out.append(
                f"{n} {noun} on the rate limit; next attempt in {_span(soonest)}"
            )
        return out


#: Alerts older than this leave the banner (the API screen keeps them).
ALERT_SHOWN_SECONDS = 600.0


def _span(seconds: float) -> str:
    """``42s``, ``7m05s`` or ``3h12m``."""
    whole = max(0, math.ceil(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def rate_limited_tasks(beats: Sequence[WorkerInfo]) -> list[RateLimitedTask]:
    """The tasks the heartbeats report as held by a limit; malformed entries
    are left out."""
    out: list[RateLimitedTask] = []
    for beat in beats:
        held = beat.rate_limited if isinstance(beat.rate_limited, dict) else {}
        for task_id, when in held.items():
            if not isinstance(when, int | float) or not math.isfinite(when):
                logger.warning(
                    "api status: worker %s reports a bad next attempt for %s",
                    beat.worker_id,
                    task_id,
                )
                continue
            out.append(RateLimitedTask(str(task_id), beat.worker_id, float(when)))
    out.sort(key=lambda t: t.next_attempt)
    return out


async def read_api_status(
    limiter: RateLimiter,
    beats: Sequence[WorkerInfo],
    cache_stats: tuple[int, int] = (0, 0),
) -> ApiStatus:
    """One reading for the console."""
    stats = await limiter.priority_stats()
    ordered = {str(p): stats[str(p)] for p in PRIORITIES if str(p) in stats}
    return ApiStatus(
        alerts=await limiter.alerts(),
        paused_until=await limiter.paused_until(),
        learned_limits=await limiter.learned_limits(),
        priorities=ordered,
        held_share=limiter.held_permille / 1000,
        cache_hits=cache_stats[0],
        cache_misses=cache_stats[1],
        rate_limited=rate_limited_tasks(beats),
    )


__all__ = ["ApiStatus", "RateLimitedTask", "rate_limited_tasks", "read_api_status"]
