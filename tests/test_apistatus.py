"""The control plane's picture of the model API: alerts, the shared pause,
rate-limited tasks from the heartbeats, per-priority use, reported limits and
the input and output series against their limits."""

from __future__ import annotations

import math

from cortex_core.apistatus import rate_limited_tasks
from cortex_core.heartbeat import WorkerInfo
from cortex_core.system import ControlPlane, Services


async def test_snapshot_carries_the_api_status_and_split_series(
    services: Services,
) -> None:
    limiter = services.limiter
    now = limiter.server_now()
    reservation = await limiter.reserve(300, 100, priority="high")
    await limiter.settle(reservation, 250, 40)
    await limiter.alert("Claude API: a 429 without retry-after (over quota)")
    await limiter.pause_for(90)
    await limiter.learn_limit("output_tokens", 8_000)
    await services.heartbeats.beat(
        WorkerInfo(
            worker_id="w1",
            host="box",
            pid=1,
            started_at=now,
            beat_at=now,
            rate_limited={"a" * 24: now + 90, "b" * 24: now + 30},
        )
    )
    plane = ControlPlane(services, None)
    snap = await plane.snapshot()
    api = snap.api
    assert api is not None
    assert [t.task_id for t in api.rate_limited] == ["b" * 24, "a" * 24]
    assert api.paused_until is not None and api.paused_until > now + 80
    assert api.learned_limits == {"output_tokens": 8_000}
    assert api.priorities["high"].calls == 1
    assert api.priorities["high"].tokens == 290
    notices = " | ".join(snap.notices)
    assert "over quota" in notices
    assert "every worker paused for 1m" in notices
    assert "2 tasks wait on the rate limit; next attempt in " in notices
    tokens = snap.tokens
    assert tokens.input_per_minute[-1] == 250
    assert tokens.output_per_minute[-1] == 40
    assert tokens.tokens_per_minute[-1] == 290
    assert tokens.output_limit == 8_000


def test_malformed_heartbeat_entries_are_left_out() -> None:
    beat = WorkerInfo(
        worker_id="w1",
        host="box",
        pid=1,
        started_at=0.0,
        rate_limited={"good": 5.0, "bad": "soon", "nan": math.nan},  # type: ignore[dict-item]
    )
    assert [t.task_id for t in rate_limited_tasks([beat])] == ["good"]
