"""A cancel that a library swallowed still ends cortex's loops."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from helpers import finish

from cortex_core.aio import raise_if_cancelled, where
from cortex_core.backends.local import LocalBackend
from cortex_core.config import Settings
from cortex_core.system import Services


async def test_a_swallowed_cancel_is_raised_again() -> None:
    reached: list[str] = []

    async def swallower() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        reached.append("after the swallow")
        raise_if_cancelled()
        reached.append("past the check")

    job = asyncio.create_task(swallower())
    await asyncio.sleep(0)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert reached == ["after the swallow"]


async def test_wait_for_completing_as_the_cancel_lands() -> None:
    """The redis-py case: a write done in the same turn as the cancel. On 3.11
    wait_for returns the result and drops the cancel; the check still ends
    the task."""
    inner: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def writer() -> None:
        await asyncio.wait_for(inner, timeout=30)
        raise_if_cancelled()

    job = asyncio.create_task(writer())
    await asyncio.sleep(0)
    inner.set_result(1)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job


async def test_no_cancel_no_raise() -> None:
    raise_if_cancelled()
    await asyncio.sleep(0)
    raise_if_cancelled()


async def test_supervisor_ends_when_redis_swallows_its_cancel(
    settings: Settings, services: Services
) -> None:
    """LocalBackend.supervise() whose Redis read swallows every cancel (as
    redis-py can) still ends on the cancel, without stop_all()."""
    backend = LocalBackend(
        settings,
        redis_url=services.url,
        client=services.client,
        keys=services.keys,
        audit=services.audit,
    )
    real_read = backend.read_desired
    reads = 0

    async def swallowing_read() -> int | None:
        nonlocal reads
        reads += 1
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.05)
        return await real_read()

    backend.read_desired = swallowing_read  # type: ignore[method-assign]
    await backend.set_desired(0)
    job = asyncio.create_task(backend.supervise(interval=0.01), name="supervisor")
    try:
        while reads < 3:
            await asyncio.sleep(0.01)
        assert "supervise" in where(job)
        job.cancel()
        ended = await finish(job, timeout=10)
        assert ended, "the supervisor looped on after its cancel"
        assert job.cancelled()
    finally:
        await backend.stop_all(grace=1)
