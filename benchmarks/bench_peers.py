"""Enqueue and dispatch: cortex beside python-rq, arq, dramatiq and a bare
redis-py pipeline, on the same Redis, with the same no-op job and 300-byte
payloads, each measured in the same run.

cortex runs here, in this process: enqueue one task per call and 100 per
call (audit trail on), and one worker process (8 tasks at once, audit on)
claiming, running a no-op, settling the budget, completing and recording.
Each peer runs in a process of its own (``benchmarks.peers``), with the
interpreter ``CORTEX_BENCH_PEERS_PYTHON`` names (``./dev bench`` sets up a
venv for them); a peer that is not installed is reported as such.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import redis

from benchmarks.bench_dispatch import TASKS, bench_tasks, dispatch_rate
from benchmarks.common import bench_services, median, private_redis

BATCH = 100
ROUNDS = 3
ROOT = Path(__file__).resolve().parent.parent


async def _cortex(tmp: Path, url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    async with bench_services(tmp, url) as sv:
        tasks = bench_tasks(TASKS)
        started = time.perf_counter()
        for task in tasks:
            await sv.enqueue([task])
        assert sv.audit.flush()
        out["enqueue one"] = TASKS / (time.perf_counter() - started)
    async with bench_services(tmp, url) as sv:
        tasks = bench_tasks(TASKS)
        started = time.perf_counter()
        for i in range(0, TASKS, BATCH):
            await sv.enqueue(tasks[i : i + BATCH])
        assert sv.audit.flush()
        out["enqueue batched"] = TASKS / (time.perf_counter() - started)
        out["dispatch"] = await dispatch_rate(sv)
    return out


def _peer(name: str, url: str) -> dict[str, float] | str:
    python = os.environ.get("CORTEX_BENCH_PEERS_PYTHON", sys.executable)
    result = subprocess.run(
        [python, "-m", "benchmarks.peers", name, url, str(TASKS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["failed"])[-1]
        if "ModuleNotFoundError" in last:
            return f"not installed ({last.split()[-1]}); ./dev bench installs it"
        return f"failed: {last}"
    data: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def run() -> dict[str, dict[str, float]]:
    """Median rates per system and measure, after a warm-up round."""
    rounds: list[dict[str, dict[str, float]]] = []
    problems: dict[str, str] = {}
    with private_redis() as (tmp, url):
        client = redis.Redis.from_url(url)
        for r in range(ROUNDS + 1):
            found: dict[str, dict[str, float]] = {}
            client.flushdb()
            found["cortex"] = asyncio.run(_cortex(tmp, url))
            for name in ("bare", "rq", "arq", "dramatiq"):
                client.flushdb()
                got = _peer(name, url)
                if isinstance(got, str):
                    problems[name] = got
                else:
                    found[name] = got
            if r > 0:
                rounds.append(found)
        client.close()
    med: dict[str, dict[str, float]] = {}
    for system in rounds[0]:
        med[system] = {
            measure: median([r[system][measure] for r in rounds])
            for measure in rounds[0][system]
        }
    for name, problem in problems.items():
        print(f"  {name}: {problem}")
    return med


def report(med: dict[str, dict[str, float]]) -> None:
    print(
        f"enqueue and dispatch: {TASKS} tasks of a 300-byte payload, batches of "
        f"{BATCH}, median of {ROUNDS} rounds after a warm-up (tasks/s)"
    )
    measures = ["enqueue one", "enqueue batched", "dispatch", "dispatch, 10 ms poll"]
    print(f"  {'':<10}" + "".join(f"{m:>22}" for m in measures))
    for system, rates in med.items():
        cells = "".join(
            f"{rates[m]:>22,.0f}" if m in rates else f"{'-':>22}" for m in measures
        )
        print(f"  {system:<10}{cells}")
    c = med["cortex"]
    print("ratios (cortex / baseline):")
    if "bare" in med:
        ratio = c["enqueue batched"] / med["bare"]["enqueue batched"]
        print(f"  batched enqueue / bare pipelined LPUSH   {ratio:.2f}  (aim >= 0.40)")
    if "rq" in med:
        print(
            "  batched enqueue / rq enqueue_many        "
            f"{c['enqueue batched'] / med['rq']['enqueue batched']:.1f}  (aim >= 5)"
        )
    for name in ("rq", "arq", "dramatiq"):
        if name in med:
            print(
                f"  enqueue one / {name:<9} enqueue one        "
                f"{c['enqueue one'] / med[name]['enqueue one']:.1f}"
            )
    peers = {
        f"{name} ({m})": rates[m]
        for name, rates in med.items()
        if name not in ("cortex", "bare")
        for m in ("dispatch", "dispatch, 10 ms poll")
        if m in rates
    }
    if peers:
        best = max(peers, key=lambda k: peers[k])
        print(
            f"  dispatch / fastest peer, {best:<24} "
            f"{c['dispatch'] / peers[best]:.1f}  (aim >= 3)"
        )


def main() -> None:
    report(run())


if __name__ == "__main__":
    main()
