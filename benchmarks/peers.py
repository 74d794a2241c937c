"""The peers, measured one per process: ``python -m benchmarks.peers NAME URL N``
prints one JSON object of rates (tasks per second).

Each peer gets the same no-op job with the same 300-byte string argument, on
the same Redis, used the way its documentation shows. ``bare`` is redis-py
pipelining LPUSH of the same payloads: the most a client can push.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import json
import sys
import time
from collections.abc import Callable
from typing import Any

PAYLOAD = "x" * 300
BATCH = 100

_count = itertools.count(1)


def noop(payload: str) -> None:
    """The job: does nothing with its argument."""


async def arq_noop(ctx: dict[str, Any], payload: str) -> None:
    """The same job for arq, which passes a context first."""


def _rate(n: int, started: float) -> float:
    return n / (time.perf_counter() - started)


def bare(url: str, n: int) -> dict[str, float]:
    import redis

    client = redis.Redis.from_url(url)
    started = time.perf_counter()
    for i in range(0, n, BATCH):
        with client.pipeline(transaction=False) as pipe:
            for _ in range(min(BATCH, n - i)):
                pipe.lpush("bare:bench", PAYLOAD)
            pipe.execute()
    rate = _rate(n, started)
    client.delete("bare:bench")
    return {"enqueue batched": rate}


def rq(url: str, n: int) -> dict[str, float]:
    import redis
    from rq import Queue, SimpleWorker

    # rq refuses functions of __main__: take the job from the module by name.
    job = importlib.import_module("benchmarks.peers").noop
    client = redis.Redis.from_url(url)
    queue = Queue("bench", connection=client)
    started = time.perf_counter()
    for _ in range(n):
        queue.enqueue(job, PAYLOAD)
    one = _rate(n, started)
    queue.empty()
    started = time.perf_counter()
    for i in range(0, n, BATCH):
        with client.pipeline() as pipe:
            queue.enqueue_many(
                [Queue.prepare_data(job, (PAYLOAD,)) for _ in range(min(BATCH, n - i))],
                pipeline=pipe,
            )
            pipe.execute()
    many = _rate(n, started)
    worker = SimpleWorker([queue], connection=client)
    started = time.perf_counter()
    worker.work(burst=True, logging_level="WARNING")
    return {
        "enqueue one": one,
        "enqueue batched": many,
        "dispatch": _rate(n, started),
    }


def arq(url: str, n: int) -> dict[str, float]:
    return asyncio.run(_arq(url, n))


async def _arq(url: str, n: int) -> dict[str, float]:
    from arq import create_pool
    from arq.connections import RedisSettings
    from arq.worker import Worker

    pool = await create_pool(RedisSettings.from_dsn(url))
    out: dict[str, float] = {}
    for poll, label in ((0.5, "dispatch"), (0.01, "dispatch, 10 ms poll")):
        started = time.perf_counter()
        for _ in range(n):
            await pool.enqueue_job("arq_noop", PAYLOAD)
        out.setdefault("enqueue one", _rate(n, started))
        worker = Worker(
            functions=[arq_noop],  # type: ignore[list-item]
            redis_pool=pool,
            burst=True,
            poll_delay=poll,
            handle_signals=False,
            keep_result=0,
        )
        started = time.perf_counter()
        await worker.main()
        out[label] = _rate(n, started)
        await worker.close()
    await pool.aclose()
    return out


def dramatiq(url: str, n: int) -> dict[str, float]:
    import dramatiq as dq
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=url)
    dq.set_broker(broker)
    done = itertools.count(1)
    finished = [0]

    def job(payload: str) -> None:
        finished[0] = next(done)

    actor: Callable[..., Any] = dq.actor(job, broker=broker, queue_name="bench")
    started = time.perf_counter()
    for _ in range(n):
        actor.send(PAYLOAD)  # type: ignore[attr-defined]
    one = _rate(n, started)
    worker = dq.Worker(broker, worker_threads=8)
    started = time.perf_counter()
    worker.start()
    while finished[0] < n:
        time.sleep(0.002)
    rate = _rate(n, started)
    worker.stop()
    broker.close()
    return {"enqueue one": one, "dispatch": rate}


PEERS = {"bare": bare, "rq": rq, "arq": arq, "dramatiq": dramatiq}


def main(argv: list[str]) -> None:
    name, url, n = argv[0], argv[1], int(argv[2])
    print(json.dumps(PEERS[name](url, n)))


if __name__ == "__main__":
    main(sys.argv[1:])
