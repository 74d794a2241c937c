"""The worker's probe port: liveness, readiness and metrics from its own state,
served on 127.0.0.1 and read over real HTTP."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

from cortex_core.executor import SimulatedExecutor
from cortex_core.probe import ProbeServer
from cortex_core.system import Services
from tests.helpers import make_task, make_worker, running, wait_for


def fetch(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


async def get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    return await asyncio.to_thread(fetch, port, path, method)


async def test_probes_follow_the_workers_state(services: Services) -> None:
    # The task outlasts the test (it is handed back at the stop): the figures
    # below count it running however slowly the test gets to read them.
    worker = make_worker(
        services, SimulatedExecutor(60, 60), concurrency=1, shutdown_grace=0.2
    )
    probe = ProbeServer(worker, services.queue, host="127.0.0.1", port=0)
    port = await probe.start()
    try:
        # Before its first heartbeat reached Redis the worker is alive, not ready.
        assert await get(port, "/healthz") == (200, "alive\n")
        status, body = await get(port, "/readyz")
        assert status == 503 and "no heartbeat" in body
        await services.enqueue([make_task() for _ in range(3)])
        async with running(worker):

            async def ready() -> bool:
                return (await get(port, "/readyz"))[0] == 200

            await wait_for(ready, "readiness")
            await wait_for(lambda: len(worker.running) == 1, "a task running")
            status, text = await get(port, "/metrics")
            assert status == 200
            assert 'cortex_worker_tasks_running{worker="test-worker"} 1' in text
            assert 'cortex_worker_concurrency{worker="test-worker"} 1' in text
            assert 'cortex_queue_pending{priority="high"} 2' in text
            assert "cortex_queue_in_flight 1" in text
            assert "cortex_redis_up 1" in text
            assert 'cortex_worker_ready{worker="test-worker"} 1' in text
            status, body = await get(port, "/backlog")
            assert status == 200
            assert json.loads(body) == {
                "backlog": 3,
                "pending": {"critical": 0, "high": 2, "medium": 0, "low": 0},
                "in_flight": 1,
            }
            worker.stop()
            status, body = await get(port, "/readyz")
            assert (status, body) == (503, "worker is draining\n")
            assert (await get(port, "/healthz"))[0] == 200
    finally:
        await probe.close()


async def test_liveness_fails_when_a_loop_died(services: Services) -> None:
    worker = make_worker(services)
    probe = ProbeServer(worker, services.queue, host="127.0.0.1", port=0)
    port = await probe.start()
    try:
        async with running(worker):
            await wait_for(lambda: worker.loops, "the worker's loops")
            worker.loops[0].cancel()
            await wait_for(lambda: worker.loops[0].done(), "the loop to stop")
            status, body = await get(port, "/healthz")
            assert status == 503 and "1 worker loop(s) stopped" in body
    finally:
        await probe.close()


async def test_unknown_paths_and_methods(services: Services) -> None:
    worker = make_worker(services)
    probe = ProbeServer(worker, services.queue, host="127.0.0.1", port=0)
    port = await probe.start()
    try:
        assert (await get(port, "/nope"))[0] == 404
        assert (await get(port, "/metrics", "POST"))[0] == 405
    finally:
        await probe.close()
