"""The ``cortex`` command: enqueue, worker, status, requeue, scale, stress, up."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import math
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from cortex_core import reconcile
from cortex_core.agent import open_executor
from cortex_core.backends.kubernetes import MAX_REPLICAS, KubernetesBackend
from cortex_core.backends.local import LocalBackend
from cortex_core.config import Settings, parse_latency
from cortex_core.errors import (
    CortexError,
    EnqueueRefused,
    InvalidTransition,
    UnknownTask,
)
from cortex_core.models import PRIORITIES, Priority, Task
from cortex_core.probe import ProbeServer
from cortex_core.snapshot import Header
from cortex_core.system import Services, System
from cortex_core.worker import Worker

logger = logging.getLogger(__name__)

#: What a worker may be called: a pod name fits, a control character does not.
_WORKER_NAME_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")

#: Flags shared by every subcommand, mapped onto Settings fields.
_SETTING_FLAGS: list[tuple[str, str, type, str]] = [
    (
        "--redis-url",
        "redis_url",
        str,
        "Redis URL (redis://, rediss://, unix://, redis+sentinel://)",
    ),
    ("--namespace", "namespace", str, "hash tag shared by every key"),
    ("--data-dir", "data_dir", str, "folder for embedded Redis, audit trail, logs"),
    ("--tokens-per-minute", "tokens_per_minute", int, "shared token budget"),
    ("--requests-per-minute", "requests_per_minute", int, "shared request budget"),
    ("--lease-seconds", "lease_seconds", float, "lease before a task returns"),
    ("--max-attempts", "max_attempts", int, "attempts before dead-lettering"),
    ("--log-level", "log_level", str, "DEBUG, INFO, WARNING or ERROR"),
    ("--backend", "backend", str, "who runs the workers: local or kubernetes"),
    ("--kubeconfig", "kubeconfig", str, "kubeconfig file (kubernetes backend)"),
    ("--kube-context", "kube_context", str, "kubeconfig context"),
    ("--kube-namespace", "kube_namespace", str, "namespace of the workers"),
]


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line on stderr, naming where help is, exit 2
    (argparse prints the whole usage block first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds above 0 (not nan, inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number above 0, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    # The flags are accepted before and after the command. After it, an
    # absent flag must not reset to None what was given before it, so the
    # subcommands' copies leave absent flags out of the namespace.
    before = OneLineParser(add_help=False)
    common = OneLineParser(add_help=False)
    for flag, dest, kind, text in _SETTING_FLAGS:
        before.add_argument(flag, dest=dest, type=kind, default=None, help=text)
        common.add_argument(
            flag, dest=dest, type=kind, default=argparse.SUPPRESS, help=text
        )

    parser = OneLineParser(
        prog="cortex",
        description="Run LLM agent tasks through a Redis priority queue.",
        parents=[before],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("enqueue", parents=[common], help="add tasks to the queue")
    p.add_argument("query", help="the question about the cluster")
    p.add_argument("--category", required=True)
    p.add_argument("--priority", required=True, choices=[str(x) for x in PRIORITIES])
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--idempotency-key", default=None)
    p.add_argument("--json", action="store_true", help="print the ids as JSON")

    p = sub.add_parser("worker", parents=[common], help="run one worker process")
    p.add_argument("--name", default=None, help="worker id (default host-pid)")
    p.add_argument("--concurrency", type=int, default=None)
    p.add_argument("--latency", default=None, help="simulated MIN:MAX seconds")
    p.add_argument(
        "--parent-pid",
        type=int,
        default=None,
        help="stop, handing tasks back, when this process (the supervisor) ends",
    )
    p.add_argument(
        "--supervisor-id",
        default=None,
        help="stop, handing tasks back, when another supervisor takes over",
    )

    p = sub.add_parser("status", parents=[common], help="queue depths and workers")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("requeue", parents=[common], help="requeue dead tasks")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("task_id", nargs="?")
    group.add_argument("--all", action="store_true", help="every dead task")

    p = sub.add_parser("audit", parents=[common], help="check the audit trail")
    audit = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    p = audit.add_parser(
        "verify", parents=[common], help="compare Redis with the audit trail"
    )
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "restore", parents=[common], help="rebuild lost queues from the audit trail"
    )
    p.add_argument("--dry-run", action="store_true", help="say what, change nothing")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("scale", parents=[common], help="set the worker count")
    p.add_argument("count", help="N, +N or -N")
    p.add_argument("--yes", action="store_true", help="confirm scaling to 0")

    sub.add_parser(
        "unpin", parents=[common], help="hand the worker count back to the autoscaler"
    )

    p = sub.add_parser("pause", parents=[common], help="stop claims")
    p.add_argument("priority", nargs="?", choices=[str(x) for x in PRIORITIES])
    p = sub.add_parser("resume", parents=[common], help="resume claims")
    p.add_argument("priority", nargs="?", choices=[str(x) for x in PRIORITIES])

    p = sub.add_parser("up", parents=[common], help="Redis and workers, no console")
    p.add_argument("--workers", type=int, default=None)

    p = sub.add_parser("stress", parents=[common], help="run the reference workload")
    p.add_argument("--tasks", type=int, default=50)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=8, help="tasks per worker")
    p.add_argument("--latency", default="3:5", help="simulated MIN:MAX seconds")
    p.add_argument("--timeout", type=seconds, default=600.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--json", action="store_true")
    return parser


def load_settings(args: argparse.Namespace, **extra: Any) -> Settings:
    overrides = {dest: getattr(args, dest, None) for _, dest, _, _ in _SETTING_FLAGS}
    overrides.update(extra)
    return Settings.load(overrides)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return asyncio.run(_dispatch(args))
    except CortexError as err:
        print(f"cortex: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (| head); say nothing more.
        with contextlib.suppress(OSError):
            sys.stdout.close()
        return 141


async def _dispatch(args: argparse.Namespace) -> int:
    command = args.command
    if command == "worker":
        extra: dict[str, Any] = {}
        if args.concurrency is not None:
            extra["concurrency"] = args.concurrency
        if args.latency is not None:
            lo, hi = parse_latency(args.latency)
            extra.update(sim_latency_min=lo, sim_latency_max=hi)
        settings = load_settings(args, **extra)
        setup_logging(settings.log_level)
        return await _worker(
            settings,
            args.name,
            parent_pid=args.parent_pid,
            supervisor_id=args.supervisor_id,
        )
    if command == "stress":
        settings = load_settings(args)
        setup_logging("WARNING" if args.log_level is None else settings.log_level)
        return await _stress(settings, args)
    settings = load_settings(args)
    setup_logging("WARNING" if args.log_level is None else settings.log_level)
    if command == "up":
        if args.workers is not None:
            settings = settings.replace(workers=args.workers)
        return await _up(settings)
    # Check what the command line says before reaching for Redis.
    tasks = _tasks_from(args, settings) if command == "enqueue" else []
    scale = _parse_scale(args.count) if command == "scale" else (False, 0)
    if settings.embedded and not (settings.redis_dir / "redis.conf").exists():
        # A mistyped --data-dir would otherwise read as an empty, healthy queue.
        print(
            f"cortex: note: no cortex data in {settings.data_dir}; "
            "starting a new embedded deployment there",
            file=sys.stderr,
        )
    async with System.open(settings, start_workers=False) as system:
        sv = system.services
        if command == "enqueue":
            return await _enqueue(sv, tasks, as_json=args.json)
        if command == "status":
            return await _status(system, args.json)
        if command == "requeue":
            if args.all:
                return await _requeue_all(sv)
            else:
                task_id = await sv.queue.resolve_dead(args.task_id)
                await system.control.requeue(task_id)
                print(f"requeued {task_id}")
            return 0
        if command == "scale":
            return await _scale(system, *scale, confirmed=args.yes)
        if command == "unpin":
            owner = await system.control.release_pin()
            print(f"released: the worker count belongs to {owner} again")
            return 0
        if command == "audit":
            report = await reconcile.verify(sv.queue, sv.audit)
            print(json.dumps(report.to_json()) if args.json else report.render())
            return 0 if report.ok else 1
        if command == "restore":
            restored = await reconcile.restore(sv.queue, sv.audit, dry_run=args.dry_run)
            print(json.dumps(restored.to_json()) if args.json else restored.render())
            return 0
        if command in ("pause", "resume"):
            prio = Priority(args.priority) if args.priority else None
            await (
                sv.queue.pause(prio) if command == "pause" else sv.queue.resume(prio)
            )
            print(f"{command}d {prio or 'all priorities'}")
            return 0
    raise CortexError(f"unknown command {command!r}")


def _local_backend(sv: Services) -> LocalBackend:
    """The local backend on these services, to read or set the worker count
    (it starts nothing unless asked to supervise)."""
    return LocalBackend(sv.settings, redis_url=sv.url, client=sv.client, keys=sv.keys)


async def _requeue_all(sv: Services) -> int:
    """Requeue every dead task it can; name each it cannot, exit 1 if any."""
    done = 0
    refused: list[str] = []
    for task_id in await sv.queue.dead_ids(limit=100_000):
        try:
            await sv.queue.requeue(task_id)
        except (UnknownTask, InvalidTransition) as err:
            refused.append(f"not requeued {task_id}: {err}")
            continue
        sv.audit.record(task_id, "requeued", by="cli")
        done += 1
    print(f"requeued {done} dead tasks")
    for line in refused:
        print(line, file=sys.stderr)
    return 1 if refused else 0


async def _worker(
    settings: Settings,
    name: str | None,
    *,
    parent_pid: int | None = None,
    supervisor_id: str | None = None,
) -> int:
    if name is not None and not _WORKER_NAME_RE.fullmatch(name):
        raise CortexError(f"--name: 1 to 64 letters, digits and . _ : -, got {name!r}")
    worker_id = name or f"{socket.gethostname()}-{os.getpid()}"
    async with (
        System.open(settings, start_workers=False) as system,
        open_executor(settings, system.services) as executor,
    ):
        sv = system.services
        worker = Worker(
            worker_id=worker_id,
            queue=sv.queue,
            limiter=sv.limiter,
            executor=executor,
            heartbeats=sv.heartbeats,
            audit=sv.audit,
            concurrency=settings.concurrency,
            lease_seconds=settings.lease_seconds,
            shutdown_grace=settings.shutdown_grace_seconds,
        )
        worker.parent_pid = parent_pid
        if supervisor_id is not None:
            worker.superseded = functools.partial(
                _local_backend(sv).superseded, supervisor_id
            )
        worker.install_signal_handlers()
        probe = None
        if settings.metrics_port:
            probe = ProbeServer(
                worker,
                sv.queue,
                host=settings.metrics_host,
                port=settings.metrics_port,
            )
            await probe.start()
        try:
            await worker.run()
        finally:
            if probe is not None:
                await probe.close()
    return 0


def _tasks_from(args: argparse.Namespace, settings: Settings) -> list[Task]:
    if not 1 <= args.count <= 100_000:
        raise CortexError(f"--count: between 1 and 100000, got {args.count}")
    if args.idempotency_key is not None and args.count != 1:
        raise CortexError("--idempotency-key: only with --count 1")
    return [
        Task.create(
            query=args.query,
            category=args.category,
            priority=args.priority,
            max_attempts=settings.max_attempts,
            idempotency_key=args.idempotency_key,
        )
        for _ in range(args.count)
    ]


async def _enqueue(sv: Services, tasks: list[Task], *, as_json: bool) -> int:
    try:
        results = await sv.enqueue(tasks)
    except EnqueueRefused as err:
        # Print what was enqueued before the error, so nothing goes unnoticed.
        for task_id, created in err.created:
            print(task_id if created else f"{task_id} (already enqueued)")
        raise
    if as_json:
        print(json.dumps([{"id": i, "created": c} for i, c in results]))
    else:
        for task_id, created in results:
            print(task_id if created else f"{task_id} (already enqueued)")
    return 0


async def _status(system: System, as_json: bool) -> int:
    snap = await system.control.snapshot(log_limit=0)
    q = snap.queues
    workers = [w.__dict__ for w in snap.workers]
    if as_json:
        print(
            json.dumps(
                {
                    "redis": snap.header.redis,
                    "namespace": snap.header.namespace,
                    "simulated": snap.header.simulated,
                    "notices": list(snap.notices),
                    "kubernetes": _kube_status(snap.header),
                    "pending": {str(p): n for p, n in q.pending.items()},
                    "in_flight": q.in_flight,
                    "dead": q.dead,
                    "paused": sorted(q.paused),
                    "workers": workers,
                    "tokens_per_minute": (snap.tokens.tokens_per_minute or [0])[-1],
                },
                default=str,
            )
        )
        return 0
    model = "simulated model" if snap.header.simulated else "claude"
    print(f"redis {snap.header.redis}  namespace {snap.header.namespace}  {model}")
    h = snap.header
    if h.kube_context is not None:
        print(
            f"kubernetes context {h.kube_context}  namespace {h.kube_namespace}  "
            f"workers {h.desired_workers}  autoscaler {h.autoscaler}"
        )
    for notice in snap.notices:
        print(f"warning: {notice}")
    print(
        "pending "
        + "  ".join(f"{p}={n}" for p, n in q.pending.items())
        + f"  in-flight={q.in_flight}  dead={q.dead}"
        + (f"  paused={','.join(sorted(q.paused))}" if q.paused else "")
    )
    for w in snap.workers:
        where = f"node={w.node}" if w.node else f"pid={w.pid}"
        print(
            f"worker {w.name} {w.state} {where} tasks={len(w.current)} "
            f"done={w.done} failed={w.failed}"
        )
    if not snap.workers:
        print("no workers are sending heartbeats")
    return 0


def _kube_status(h: Header) -> dict[str, object] | None:
    if h.kube_context is None:
        return None
    return {
        "context": h.kube_context,
        "namespace": h.kube_namespace,
        "desired": h.desired_workers,
        "autoscaler": h.autoscaler,
        "pinned": h.pinned,
    }


def _parse_scale(text: str) -> tuple[bool, int]:
    """``N`` (absolute) or ``+N`` / ``-N`` (relative): (relative, number)."""
    try:
        number = int(text)
    except ValueError as err:
        raise CortexError(f"scale: expected N, +N or -N, got {text!r}") from err
    relative = text.startswith(("+", "-"))
    if not relative and not 0 <= number <= MAX_REPLICAS:
        raise CortexError(f"scale: between 0 and {MAX_REPLICAS} workers, got {number}")
    return relative, number


async def _scale(
    system: System, relative: bool, number: int, *, confirmed: bool
) -> int:
    sv = system.services
    if isinstance(system.backend, KubernetesBackend):
        kube = system.backend
        view = await kube.refresh()
        if view.desired is None:
            raise CortexError(view.error or "kubernetes: the worker count is unknown")
        pinned = view.autoscaler.pinned if view.autoscaler else None
        current = pinned if pinned is not None else view.desired
        target = current + number if relative else number
        if target == 0 and not confirmed:
            raise CortexError(
                "scale: 0 stops every worker pod; run again with --yes to confirm"
            )
        count = await kube.set_desired(target, view=view)
        owner = kube.last.autoscaler
        how = f" (pinned: {owner.describe()})" if owner is not None else ""
        print(f"desired workers: {count}{how}")
        return 0
    backend = _local_backend(sv)
    target = await backend.read_desired() + number if relative else number
    if target == 0 and not confirmed:
        raise CortexError(
            "scale: 0 stops every local worker (running tasks are handed "
            "back); run again with --yes to confirm"
        )
    if relative:
        count = await backend.scale(number)
    else:
        count = await backend.set_desired(number)
    print(f"desired workers: {count}")
    if not await backend.supervisor_alive():
        print(
            "warning: no local supervisor is running (cortex up or cortex-tui), "
            "so no worker was started or stopped; one that starts sets the "
            "count from its own workers setting (--workers, CORTEX_WORKERS)",
            file=sys.stderr,
        )
    return 0


async def _up(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with System.open(settings, start_workers=True) as system:
        print(
            f"cortex up: redis {settings.redis_display()}; runs "
            f"{settings.workers} workers, or stands by while another process "
            "supervises them; Ctrl-C stops",
            file=sys.stderr,
        )
        await stop.wait()
        print("cortex up: stopping workers", file=sys.stderr)
        del system
    return 0


async def _stress(settings: Settings, args: argparse.Namespace) -> int:
    from cortex_core.stress import run_stress

    latency = parse_latency(args.latency)
    if not 1 <= args.tasks <= 1_000_000:
        raise CortexError(f"--tasks: between 1 and 1000000, got {args.tasks}")
    if not 1 <= args.workers <= 64:
        raise CortexError(f"--workers: between 1 and 64, got {args.workers}")
    started = time.monotonic()
    report = await run_stress(
        settings,
        tasks=args.tasks,
        workers=args.workers,
        concurrency=args.concurrency,
        latency=latency,
        timeout=args.timeout,
        seed=args.seed,
    )
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        print(report.render())
        print(f"\n(total wall time {time.monotonic() - started:.1f} s)")
    ok = report.lost == 0 and report.failed == 0 and report.completed == report.tasks
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
