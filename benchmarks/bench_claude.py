"""How much of an API's token limit cortex turns into work: worker processes
running the Claude executor against the fake Messages API, which enforces
40,000 tokens per minute (input plus output, a token bucket as the API's) and
answers in 3 to 5 s with the reference workload's token sizes.

Tasks of the reference mix arrive faster than the limit can serve (500 a
minute against about 400), on top of a backlog of 200; the first minute (the
window filling) is left out and the tokens the fake admitted are counted over
the measured span. The baseline, measured in the same run on the same fake, is
the earlier system's shape: the same 2 workers taking one task at a time.

    python -m benchmarks.bench_claude              # 60 s warm-up, 180 s measured
    python -m benchmarks.bench_claude --seconds 60 --warmup 30 --baseline 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.common import private_redis
from cortex_core.config import Settings
from cortex_core.system import Services
from cortex_core.workload import reference_tasks
from tests.fakes.anthropic_api import API_KEY, FakeAnthropic, Limits

TOKENS_PER_MINUTE = 40_000
_CORTEX = (sys.executable, "-m", "cortex_core.cli")
#: The earlier system's published run.
EARLIER_TASKS_PER_MINUTE = 30
EARLIER_TOKENS_PER_MINUTE = 1_800


@dataclass
class Run:
    label: str
    workers: int
    concurrency: int
    measured_seconds: float
    calls: int
    tokens: int
    mean_tokens_per_call: float
    limit_429s: int
    other_errors: int

    @property
    def tokens_per_minute(self) -> float:
        return self.tokens * 60 / self.measured_seconds

    @property
    def tasks_per_minute(self) -> float:
        return self.calls * 60 / self.measured_seconds

    @property
    def share_of_limit(self) -> float:
        return self.tokens_per_minute / TOKENS_PER_MINUTE


@contextlib.contextmanager
def _workers(env: dict[str, str], count: int, logs: Path) -> Iterator[None]:
    procs = []
    for n in range(count):
        out = open(logs / f"worker-{n + 1}.log", "ab")  # noqa: SIM115
        procs.append(
            (
                subprocess.Popen(
                    [*_CORTEX, "worker", "--name", f"bench-{n + 1}"],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                ),
                out,
            )
        )
    try:
        yield
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, out in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            out.close()


async def _feed(sv: Services, per_minute: float, stop: asyncio.Event) -> None:
    """The reference mix at a steady rate above what the limit can serve, so
    that a backlog builds while urgent tasks keep arriving, as in a busy
    cluster. Starts with a backlog already waiting."""
    await sv.queue.enqueue_many(reference_tasks(200))
    sent, started = 0, time.monotonic()
    while not stop.is_set():
        due = int((time.monotonic() - started) * per_minute / 60) - sent
        if due > 0:
            await sv.queue.enqueue_many(reference_tasks(due))
            sent += due
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)


async def _run(
    label: str,
    *,
    workers: int,
    concurrency: int,
    warmup: float,
    seconds: float,
    latency: tuple[float, float],
    max_tokens: int,
    held_share: float,
    headers: bool,
    arrivals: float,
) -> Run:
    fake = FakeAnthropic(
        limits=Limits(tokens=TOKENS_PER_MINUTE, window=60.0),
        latency=latency,
        output_tokens=(35, 68),
        send_headers=headers,
    )
    with private_redis() as (tmp, url), fake.running():
        settings = Settings.load(
            {
                "redis_url": url,
                "namespace": f"bench-{secrets.token_hex(4)}",
                "data_dir": tmp / "data",
                "executor": "claude",
                "anthropic_api_key": API_KEY,
                "anthropic_base_url": fake.url,
                "tools": "none",
                "tokens_per_minute": TOKENS_PER_MINUTE,
                "max_tokens": max_tokens,
                "concurrency": concurrency,
                "held_share": held_share,
                "log_level": "WARNING",
            },
            environ={},
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORTEX_")}
        env.update(settings.to_env())
        logs = tmp / "logs"
        logs.mkdir()
        sv = await Services.connect(settings, url, name="bench")
        stop = asyncio.Event()
        try:
            feeder = asyncio.create_task(_feed(sv, arrivals, stop))
            with _workers(env, workers, logs):
                started = time.time()
                await asyncio.sleep(warmup + seconds)
                stop.set()
                await feeder
        finally:
            await sv.close()
    begin, end = started + warmup, started + warmup + seconds
    span = [(i, o) for at, i, o in fake.counted if begin <= at < end]
    tokens = sum(i + o for i, o in span)
    errors = sum(1 for s in fake.statuses if s not in (200, 429))
    return Run(
        label=label,
        workers=workers,
        concurrency=concurrency,
        measured_seconds=seconds,
        calls=len(span),
        tokens=tokens,
        mean_tokens_per_call=round(tokens / max(1, len(span)), 1),
        limit_429s=fake.limit_429s,
        other_errors=errors,
    )


def _report(cortex: Run, baseline: Run) -> str:
    rows = [
        ("", "cortex", "baseline (same run)", "earlier system"),
        (
            "workers",
            f"{cortex.workers} x {cortex.concurrency} at once",
            f"{baseline.workers} x {baseline.concurrency}",
            "2 x 1",
        ),
        (
            "tokens per minute",
            f"{cortex.tokens_per_minute:,.0f}",
            f"{baseline.tokens_per_minute:,.0f}",
            f"{EARLIER_TOKENS_PER_MINUTE:,}",
        ),
        (
            "share of 40,000 limit",
            f"{cortex.share_of_limit:.1%}",
            f"{baseline.share_of_limit:.1%}",
            f"{EARLIER_TOKENS_PER_MINUTE / TOKENS_PER_MINUTE:.1%}",
        ),
        (
            "tasks per minute",
            f"{cortex.tasks_per_minute:.1f}",
            f"{baseline.tasks_per_minute:.1f}",
            f"{EARLIER_TASKS_PER_MINUTE}",
        ),
        (
            "tokens per task",
            f"{cortex.mean_tokens_per_call}",
            f"{baseline.mean_tokens_per_call}",
            "about 100 to 136",
        ),
        ("429s", f"{cortex.limit_429s}", f"{baseline.limit_429s}", "not reported"),
        ("other errors", f"{cortex.other_errors}", f"{baseline.other_errors}", ""),
        (
            "measured",
            f"{cortex.measured_seconds:.0f} s",
            f"{baseline.measured_seconds:.0f} s",
            "about 100 s",
        ),
    ]
    widths = [max(len(r[c]) for r in rows) + 2 for c in range(4)]
    lines = [
        "".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows
    ]
    ratio = cortex.tasks_per_minute / max(0.001, baseline.tasks_per_minute)
    lines.append(f"cortex / baseline tasks per minute: {ratio:.1f}x")
    return "\n".join(line.rstrip() for line in lines)


async def _main(args: argparse.Namespace) -> None:
    lo, hi = (float(x) for x in args.latency.split(":"))
    cortex = await _run(
        "cortex",
        workers=args.workers,
        concurrency=args.concurrency,
        warmup=args.warmup,
        seconds=args.seconds,
        latency=(lo, hi),
        max_tokens=args.max_tokens,
        held_share=args.held_share,
        headers=not args.no_headers,
        arrivals=args.arrivals,
    )
    baseline = await _run(
        "baseline",
        workers=args.workers,
        concurrency=1,
        warmup=min(args.warmup, 10.0),
        seconds=args.baseline,
        latency=(lo, hi),
        max_tokens=args.max_tokens,
        held_share=args.held_share,
        headers=not args.no_headers,
        arrivals=args.arrivals,
    )
    print(
        f"bench_claude: fake API at {TOKENS_PER_MINUTE:,} tokens/min, "
        f"latency {args.latency} s, max_tokens {args.max_tokens}, "
        f"held share {args.held_share:g}, rate-limit headers "
        f"{'off' if args.no_headers else 'on'}"
    )
    print(_report(cortex, baseline))
    if args.json:
        out = {
            r.label: asdict(r)
            | {
                "tokens_per_minute": round(r.tokens_per_minute),
                "tasks_per_minute": round(r.tasks_per_minute, 1),
                "share_of_limit": round(r.share_of_limit, 4),
            }
            for r in (cortex, baseline)
        }
        print(json.dumps(out))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_claude")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--warmup", type=float, default=60.0)
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--baseline", type=float, default=60.0)
    parser.add_argument("--latency", default="3:5")
    parser.add_argument("--max-tokens", type=int, default=80)
    parser.add_argument("--held-share", type=float, default=0.2)
    parser.add_argument("--no-headers", action="store_true")
    parser.add_argument(
        "--arrivals",
        type=float,
        default=500.0,
        help="tasks enqueued per minute (the limit serves about 400)",
    )
    parser.add_argument("--json", action="store_true")
    asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
