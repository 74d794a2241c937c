"""What the API tells the shared budget (pauses, reported limits, headroom),
the share held for urgent work, alerts and per-priority counters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from cortex_core import connection
from cortex_core.keys import Keyspace
from cortex_core.limiter import Limits, RateLimiter

MakeLimiter = Callable[..., RateLimiter]


@pytest.fixture
async def make_limiter(redis_url: str, namespace: str) -> AsyncIterator[MakeLimiter]:
    """Limiters on the test's namespace, each on its own connection (one per
    imagined worker process)."""
    clients: list[aioredis.Redis] = []
    keys = Keyspace(namespace)

    def make(limits: Limits, **options: object) -> RateLimiter:
        client = connection.connect(redis_url, name=f"test-limiter-{len(clients)}")
        clients.append(client)
        return RateLimiter(client, keys, limits, **options)  # type: ignore[arg-type]

    yield make
    for client in clients:
        await client.aclose()


async def test_pause_holds_every_worker_and_ends_on_time(
    make_limiter: MakeLimiter,
) -> None:
    one, two = make_limiter(Limits(tokens=1000)), make_limiter(Limits(tokens=1000))
    until = await one.pause_for(0.5)
    assert await two.paused_until() == pytest.approx(until, abs=0.05)
    reservation, wait = await two.try_reserve(10, 10)
    assert reservation is None and 0.3 < wait <= 0.5
    # A shorter pause never cuts a longer one short.
    assert await two.pause_for(0.1) == until
    got = await asyncio.wait_for(two.reserve(10, 10), timeout=5)
    assert got.waited_seconds >= 0.3
    assert await one.paused_until() is None


async def test_held_share_is_open_to_critical_and_high_only(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter(Limits(tokens=1000), held_share=0.3)
    for _ in range(7):
        low, _ = await limiter.try_reserve(90, 10, priority="low")
        assert low is not None
    blocked, wait = await limiter.try_reserve(90, 10, priority="medium")
    assert blocked is None and wait > 0
    for prio in ("critical", "high", "critical"):
        urgent, _ = await limiter.try_reserve(90, 10, priority=prio)
        assert urgent is not None, prio
    full, _ = await limiter.try_reserve(90, 10, priority="critical")
    assert full is None


async def test_reported_limit_replaces_a_larger_configured_one(
    make_limiter: MakeLimiter,
) -> None:
    one = make_limiter(Limits(input_tokens=10_000))
    other = make_limiter(Limits(input_tokens=10_000))
    await one.learn_limit("input_tokens", 500)
    assert await other.learned_limits() == {"input_tokens": 500}
    first, _ = await other.try_reserve(400, 0)
    assert first is not None
    second, wait = await other.try_reserve(400, 0)
    assert second is None and wait > 0


async def test_tighten_holds_what_the_api_says_is_gone_until_its_reset(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter(Limits(output_tokens=1000))
    held = await limiter.tighten("output_tokens", remaining=200, reset_seconds=0.6)
    assert held == 800
    blocked, wait = await limiter.try_reserve(0, 300)
    assert blocked is None and 0.3 < wait <= 0.7
    # A later report replaces the hold rather than adding to it.
    assert await limiter.tighten("output_tokens", 900, 0.6) == 100
    fits, _ = await limiter.try_reserve(0, 300)
    assert fits is not None
    # Nothing is held when the window is already as tight as the API.
    assert await limiter.tighten("output_tokens", 2000, 0.6) == 0


async def test_alerts_and_priority_counters(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(Limits(tokens=100))
    await limiter.alert("Claude API: a spend limit")
    await limiter.client.lpush(limiter.keys.limiter("alerts"), b"not json")
    alerts = await limiter.alerts()
    assert [a.message for a in alerts] == ["Claude API: a spend limit"]
    first = await limiter.reserve(50, 10, priority="low")
    await limiter.settle(first, 40, 5)
    waiter = asyncio.create_task(limiter.reserve(50, 10, priority="low"))
    await asyncio.sleep(0.2)
    await limiter.release(first)
    await asyncio.wait_for(waiter, timeout=5)
    stats = await limiter.priority_stats()
    assert stats["low"].calls == 2
    assert stats["low"].tokens == 45
    assert stats["low"].waits == 1
    assert stats["low"].waited_seconds > 0.1


async def test_a_cancelled_waiter_stops_waiting(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(Limits(tokens=100))
    await limiter.pause_for(30)
    waiter = asyncio.create_task(limiter.reserve(10, 10))
    await asyncio.sleep(0.2)
    waiter.cancel()
    done, _ = await asyncio.wait({waiter}, timeout=10)
    assert done and waiter.cancelled()
    assert (await limiter.usage()).requests == 0
