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


#: Long enough that no stall of a busy machine outlasts it between two calls.
PAUSE_SECONDS = 3.0


async def server_time(limiter: RateLimiter) -> float:
    seconds, micros = await limiter.client.time()
    return int(seconds) + int(micros) / 1e6


async def test_pause_holds_every_worker_and_ends_on_time(
    make_limiter: MakeLimiter,
) -> None:
    """A pause one worker sets holds the others, each told what is left of
    it, and no reservation is granted before it ends.

    The bounds come from the server clock read around each call, not from
    fixed margins: a test that runs late sees a shorter wait, never a wrong one.
    """
    one, two = make_limiter(Limits(tokens=1000)), make_limiter(Limits(tokens=1000))
    until = await one.pause_for(PAUSE_SECONDS)
    assert await two.paused_until() == until
    before = await server_time(two)
    reservation, wait = await two.try_reserve(10, 10)
    after = await server_time(two)
    assert reservation is None
    # The script's clock has millisecond steps.
    assert until - after - 0.002 <= wait <= until - before + 0.002
    assert wait <= PAUSE_SECONDS
    # A shorter pause never cuts a longer one short.
    assert await two.pause_for(0.1) == until
    got = await asyncio.wait_for(two.reserve(10, 10), timeout=PAUSE_SECONDS + 20)
    assert got.waited_seconds > 0
    granted_ms = await two.client.zscore(two.keys.limiter("log"), got.reservation_id)
    assert granted_ms is not None and granted_ms >= until * 1000
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
    # The hold is never waited out here: a long reset costs nothing, and a
    # slow machine cannot see it end between two calls.
    reset = 6.0
    held = await limiter.tighten("output_tokens", remaining=200, reset_seconds=reset)
    assert held == 800
    blocked, wait = await limiter.try_reserve(0, 300)
    assert blocked is None and reset / 2 < wait <= reset + 0.01
    # A later report replaces the hold rather than adding to it.
    assert await limiter.tighten("output_tokens", 900, reset) == 100
    fits, _ = await limiter.try_reserve(0, 300)
    assert fits is not None
    # Nothing is held when the window is already as tight as the API.
    assert await limiter.tighten("output_tokens", 2000, reset) == 0


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
