"""The shared rate limiter against a real Redis, from several clients at once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
from helpers import DEADLINE

from cortex_core import connection
from cortex_core.keys import Keyspace
from cortex_core.limiter import (
    BUCKET_SECONDS,
    BudgetTooSmall,
    Limits,
    RateLimiter,
    Usage,
)

MakeLimiter = Callable[..., RateLimiter]


@pytest.fixture
async def make_limiter(redis_url: str, namespace: str) -> AsyncIterator[MakeLimiter]:
    """Build limiters on the test's namespace, each on its own connection."""
    clients: list[aioredis.Redis] = []
    keys = Keyspace(namespace)

    def make(limits: Limits, *, window_seconds: float = 60.0) -> RateLimiter:
        client = connection.connect(redis_url, name=f"test-limiter-{len(clients)}")
        clients.append(client)
        return RateLimiter(client, keys, limits, window_seconds=window_seconds)

    yield make
    for client in clients:
        await client.aclose()


async def limiter_keys(client: aioredis.Redis, namespace: str) -> list[bytes]:
    pattern = f"{{{namespace}}}:rl:*"
    return [key async for key in client.scan_iter(match=pattern, count=1000)]


async def assert_all_expire(client: aioredis.Redis, namespace: str) -> int:
    keys = await limiter_keys(client, namespace)
    for key in keys:
        ttl = await client.pttl(key)
        assert ttl > 0, f"{key!r} has PTTL {ttl}"
    return len(keys)


async def test_concurrent_reservers_never_overspend(make_limiter: MakeLimiter) -> None:
    """20 reservers on 20 connections at once: exactly the 5 that fit get budget."""
    limits = Limits(tokens=500)
    limiters = [make_limiter(limits) for _ in range(20)]
    await asyncio.gather(*(lim.client.ping() for lim in limiters))
    results = await asyncio.gather(*(lim.try_reserve(60, 40) for lim in limiters))
    granted = [r for r, _wait in results if r is not None]
    assert len(granted) == 5
    assert all(wait > 0 for r, wait in results if r is None)
    assert await limiters[0].usage() == Usage(5, 300, 200)


async def test_concurrent_request_budget_admits_exactly_limit(
    make_limiter: MakeLimiter,
) -> None:
    """A request budget of 5 admits 5 of 20 simultaneous reservers, no more."""
    limits = Limits(requests=5)
    limiters = [make_limiter(limits) for _ in range(20)]
    await asyncio.gather(*(lim.client.ping() for lim in limiters))
    results = await asyncio.gather(*(lim.try_reserve(1, 1) for lim in limiters))
    assert sum(r is not None for r, _wait in results) == 5
    assert (await limiters[0].usage()).requests == 5


async def test_steady_traffic_gets_budget_in_every_window(
    make_limiter: MakeLimiter,
) -> None:
    """Traffic that keeps asking gets its share in each of three rolling windows."""
    per_window = 3
    limiter = make_limiter(Limits(requests=per_window), window_seconds=1.0)
    started = time.monotonic()
    granted: Counter[int] = Counter()
    while (elapsed := time.monotonic() - started) < 3.5:
        reservation = await limiter.reserve(10, 10, timeout=2.0)
        granted[int(time.monotonic() - started)] += 1
        await limiter.settle(reservation, 8, 10)
        assert (await limiter.usage()).requests <= per_window
        await asyncio.sleep(0.05)
    assert elapsed >= 3.5
    for window in range(3):
        assert granted[window] >= per_window - 1, dict(granted)


async def test_no_limiter_key_lacks_an_expiry(
    make_limiter: MakeLimiter, raw_redis: aioredis.Redis, namespace: str
) -> None:
    """After reserve, settle, release, usage and series every rl: key expires."""
    limiter = make_limiter(Limits(tokens=1000, requests=10))
    other = make_limiter(Limits(tokens=1000, requests=10))
    first = await limiter.reserve(400, 100)
    assert await assert_all_expire(raw_redis, namespace) > 0
    second, _ = await other.try_reserve(300, 100)
    assert second is not None
    refused, wait = await other.try_reserve(300, 100)
    assert refused is None and wait > 0
    await assert_all_expire(raw_redis, namespace)
    await limiter.settle(first, 100, 50)
    await assert_all_expire(raw_redis, namespace)
    await other.release(second)
    await assert_all_expire(raw_redis, namespace)
    await other.settle(second, 10, 10)
    await limiter.usage()
    await limiter.series()
    await limiter.sync_clock()
    assert await assert_all_expire(raw_redis, namespace) >= 4


async def assert_woken(waiter: RateLimiter) -> None:
    """The waiter took the wake-up that a release or settle pushed.

    Had it got its budget by asking again after its own wait (up to
    MAX_WAIT_SECONDS), the wake-up would still be in the list. This shows
    the wake-up without timing it, which a busy machine could make late.
    """
    assert await waiter.client.llen(waiter.keys.limiter("wake")) == 0


async def test_reserve_wakes_when_another_client_releases(
    make_limiter: MakeLimiter,
) -> None:
    """A waiting reserve gets budget as soon as another client releases it."""
    limits = Limits(tokens=100)
    holder = make_limiter(limits)
    waiter = make_limiter(limits)
    held, _ = await holder.try_reserve(80, 20)
    assert held is not None
    waiting = asyncio.ensure_future(waiter.reserve(50, 10))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await holder.release(held)
    reservation = await asyncio.wait_for(waiting, timeout=DEADLINE)
    await assert_woken(waiter)
    assert reservation.input_tokens == 50
    assert 0 < reservation.waited_seconds < waiter.window_ms / 1000
    assert await waiter.usage() == Usage(1, 50, 10)


async def test_settle_lower_than_estimate_frees_budget(
    make_limiter: MakeLimiter,
) -> None:
    """Settling below the estimate gives budget back and wakes a waiter."""
    limits = Limits(tokens=100)
    caller = make_limiter(limits)
    waiter = make_limiter(limits)
    estimate, _ = await caller.try_reserve(70, 30)
    assert estimate is not None
    refused, _ = await waiter.try_reserve(40, 10)
    assert refused is None
    waiting = asyncio.ensure_future(waiter.reserve(40, 10))
    await asyncio.sleep(0.2)
    await caller.settle(estimate, 20, 10)
    reservation = await asyncio.wait_for(waiting, timeout=DEADLINE)
    await assert_woken(waiter)
    assert reservation.output_tokens == 10
    assert await caller.usage() == Usage(2, 60, 20)


async def test_wait_longer_than_socket_timeout_still_gets_budget(
    make_limiter: MakeLimiter,
) -> None:
    """A reserve whose wait exceeds the command timeout waits on, then gets in."""
    window = connection.COMMAND_TIMEOUT + 0.5
    limits = Limits(tokens=100)
    holder = make_limiter(limits, window_seconds=window)
    waiter = make_limiter(limits, window_seconds=window)
    held, _ = await holder.try_reserve(60, 40)
    assert held is not None
    reservation = await waiter.reserve(60, 40, timeout=window + 5.0)
    assert reservation.input_tokens == 60


async def test_release_of_reservation_with_a_zero_amount(
    make_limiter: MakeLimiter,
) -> None:
    """A reservation with zero output (or input) tokens can be released."""
    limiter = make_limiter(Limits(tokens=100))
    no_output = await limiter.reserve(50, 0)
    no_input = await limiter.reserve(0, 30)
    await limiter.release(no_output)
    await limiter.release(no_input)
    assert await limiter.usage() == Usage(0, 0, 0)


async def test_zero_token_calls_age_out_of_the_window(
    make_limiter: MakeLimiter,
) -> None:
    """Reservations settled at zero tokens leave the window without breaking it."""
    limiter = make_limiter(Limits(tokens=100), window_seconds=0.3)
    failed_call = await limiter.reserve(40, 10)
    await limiter.settle(failed_call, 0, 0)
    await limiter.reserve(50, 0)
    await asyncio.sleep(0.4)
    assert await limiter.usage() == Usage(0, 0, 0)
    assert (await limiter.try_reserve(60, 40))[0] is not None


async def test_reserve_timeout_raises_timeout_error(make_limiter: MakeLimiter) -> None:
    """reserve with a timeout gives up with TimeoutError when budget stays taken."""
    limiter = make_limiter(Limits(requests=1))
    assert (await limiter.try_reserve(1, 1))[0] is not None
    with pytest.raises(TimeoutError, match="no budget"):
        await limiter.reserve(1, 1, timeout=0.3)


@pytest.mark.parametrize(
    ("limits", "need"),
    [
        (Limits(tokens=100), (80, 30)),
        (Limits(input_tokens=50), (51, 0)),
        (Limits(output_tokens=10), (0, 11)),
    ],
)
async def test_estimate_over_whole_limit_raises(
    make_limiter: MakeLimiter, limits: Limits, need: tuple[int, int]
) -> None:
    """An estimate larger than the whole window's budget raises BudgetTooSmall."""
    limiter = make_limiter(limits)
    with pytest.raises(BudgetTooSmall):
        await limiter.try_reserve(*need)
    with pytest.raises(BudgetTooSmall):
        await limiter.reserve(*need, timeout=1.0)
    assert await limiter.usage() == Usage(0, 0, 0)


async def test_request_count_over_limit_raises(make_limiter: MakeLimiter) -> None:
    """Asking for more requests than the window allows raises BudgetTooSmall."""
    limiter = make_limiter(Limits(requests=1))
    with pytest.raises(BudgetTooSmall):
        await limiter.try_reserve(1, 1, requests=2)


async def test_usage_reflects_reservations(make_limiter: MakeLimiter) -> None:
    """usage() sums live reservations, and follows release and settle."""
    limiter = make_limiter(Limits(tokens=10_000))
    assert await limiter.usage() == Usage(0, 0, 0)
    first = await limiter.reserve(100, 50)
    second = await limiter.reserve(200, 25)
    assert await limiter.usage() == Usage(2, 300, 75)
    await limiter.release(first)
    assert await limiter.usage() == Usage(1, 200, 25)
    await limiter.settle(second, 20, 5)
    usage = await limiter.usage()
    assert usage == Usage(1, 20, 5)
    assert usage.tokens == 25


async def test_usage_forgets_reservations_older_than_window(
    make_limiter: MakeLimiter,
) -> None:
    """Once the window has passed, a reservation no longer counts."""
    limiter = make_limiter(Limits(tokens=100), window_seconds=0.3)
    await limiter.reserve(60, 40)
    assert (await limiter.usage()).tokens == 100
    await asyncio.sleep(0.4)
    assert await limiter.usage() == Usage(0, 0, 0)
    assert (await limiter.try_reserve(60, 40))[0] is not None


async def test_series_shows_settled_tokens(make_limiter: MakeLimiter) -> None:
    """series() counts settled tokens in its latest per-minute value."""
    limiter = make_limiter(Limits(tokens=10_000))
    await limiter.sync_clock()
    ends_at, before = await limiter.series()
    assert len(before) == 120
    assert set(before) == {0}
    reservation = await limiter.reserve(500, 500)
    await limiter.settle(reservation, 123, 77)
    other = await limiter.reserve(10, 10)
    await limiter.settle(other, 40, 60)
    ends_at, after = await limiter.series(buckets=10)
    assert len(after) == 10
    assert after[-1] == 300
    assert ends_at % BUCKET_SECONDS == 0
    assert ends_at > limiter.server_now()
