"""A worker's HTTP port for Kubernetes: liveness, readiness and metrics.

- ``GET /healthz``: 200 while every loop of the worker is alive; 503 when one
  has died (a restart is the only cure). A Redis outage does not fail it:
  restarting the worker would not bring Redis back.
- ``GET /readyz``: 200 while the worker claims tasks and Redis took its last
  heartbeat recently; 503 while it drains or cannot reach Redis.
- ``GET /backlog``: JSON ``{"backlog": N, "pending": {...}, "in_flight": M}``
  where N is every priority's pending tasks plus those in flight: what KEDA's
  metrics-api trigger scales the workers on (the keda overlay).
- ``GET /metrics``: Prometheus text: the worker's counters and the queue's
  depths (every worker reports the same depths; dashboards take the max).

The server speaks just enough HTTP/1.1 for probes and scrapers: one GET per
connection, bounded request size and read time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass

from redis.exceptions import RedisError

from cortex_core.queue import TaskQueue
from cortex_core.worker import Worker

logger = logging.getLogger(__name__)

#: Readiness needs a heartbeat Redis took within this many heartbeat intervals.
READY_BEATS = 3
HEARTBEAT_INTERVAL = 2.0
_MAX_REQUEST = 8192
_READ_TIMEOUT = 5.0
_DEPTH_TIMEOUT = 2.0


@dataclass(frozen=True)
class Health:
    ok: bool
    reason: str


def liveness(worker: Worker) -> Health:
    dead = [t for t in worker.loops if t.done()]
    if dead:
        return Health(False, f"{len(dead)} worker loop(s) stopped")
    return Health(True, "alive")


def readiness(worker: Worker, *, now: float | None = None) -> Health:
    if worker.info.state != "running":
        return Health(False, f"worker is {worker.info.state}")
    if worker.last_beat_ok is None:
        return Health(False, "no heartbeat reached Redis yet")
    age = (time.monotonic() if now is None else now) - worker.last_beat_ok
    if age > READY_BEATS * HEARTBEAT_INTERVAL:
        return Health(False, f"last heartbeat reached Redis {age:.0f}s ago")
    return Health(True, "ready")


async def metrics_text(worker: Worker, queue: TaskQueue) -> str:
    """The Prometheus exposition of one worker and the queue it serves."""
    info = worker.info
    labels = f'worker="{_escape(worker.worker_id)}"'
    lines = [
        "# HELP cortex_worker_tasks_running Tasks this worker runs now.",
        "# TYPE cortex_worker_tasks_running gauge",
        f"cortex_worker_tasks_running{{{labels}}} {len(worker.running)}",
        "# HELP cortex_worker_concurrency Tasks this worker runs at most at once.",
        "# TYPE cortex_worker_concurrency gauge",
        f"cortex_worker_concurrency{{{labels}}} {worker.concurrency}",
        "# HELP cortex_worker_tasks_done_total Tasks this worker completed.",
        "# TYPE cortex_worker_tasks_done_total counter",
        f"cortex_worker_tasks_done_total{{{labels}}} {info.done}",
        "# HELP cortex_worker_tasks_failed_total Task attempts that failed here.",
        "# TYPE cortex_worker_tasks_failed_total counter",
        f"cortex_worker_tasks_failed_total{{{labels}}} {info.failed}",
        "# HELP cortex_worker_tokens_total Model tokens this worker's tasks used.",
        "# TYPE cortex_worker_tokens_total counter",
        f"cortex_worker_tokens_total{{{labels}}} {info.tokens}",
        "# HELP cortex_worker_rate_limited_total Model calls answered 429.",
        "# TYPE cortex_worker_rate_limited_total counter",
        f"cortex_worker_rate_limited_total{{{labels}}} "
        f"{int(getattr(worker.executor, 'rate_limited', 0))}",
        "# HELP cortex_worker_ready Whether the worker is ready (1) or not (0).",
        "# TYPE cortex_worker_ready gauge",
        f"cortex_worker_ready{{{labels}}} {int(readiness(worker).ok)}",
    ]
    try:
        depths = await asyncio.wait_for(queue.depths(), _DEPTH_TIMEOUT)
    except (RedisError, OSError, TimeoutError) as err:
        logger.debug("metrics: queue depths unavailable (%s)", err)
        lines += _gauge("cortex_redis_up", "Whether Redis answered the scrape.", 0)
        return "\n".join(lines) + "\n"
    lines += _gauge("cortex_redis_up", "Whether Redis answered the scrape.", 1)
    lines += [
        "# HELP cortex_queue_pending Tasks waiting, by priority.",
        "# TYPE cortex_queue_pending gauge",
    ]
    for prio, n in depths.pending.items():
        lines.append(f'cortex_queue_pending{{priority="{prio}"}} {n}')
    lines += _gauge(
        "cortex_queue_in_flight", "Tasks claimed and running.", depths.in_flight
    )
    lines += _gauge("cortex_queue_dead", "Tasks in the dead-letter queue.", depths.dead)
    return "\n".join(lines) + "\n"


async def backlog_json(queue: TaskQueue) -> tuple[int, str, str]:
    """The whole backlog for an autoscaler: 200 and JSON, or 503 and why."""
    try:
        depths = await asyncio.wait_for(queue.depths(), _DEPTH_TIMEOUT)
    except (RedisError, OSError, TimeoutError) as err:
        return 503, f"queue depths unavailable: {type(err).__name__}\n", "text/plain"
    body = {
        "backlog": depths.total_pending + depths.in_flight,
        "pending": {str(p): n for p, n in depths.pending.items()},
        "in_flight": depths.in_flight,
    }
    return 200, json.dumps(body) + "\n", "application/json"


def _gauge(name: str, help_: str, value: int) -> list[str]:
    return [f"# HELP {name} {help_}", f"# TYPE {name} gauge", f"{name} {value}"]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class ProbeServer:
    """Serves /healthz, /readyz and /metrics for one worker."""

    def __init__(
        self, worker: Worker, queue: TaskQueue, *, host: str, port: int
    ) -> None:
        self.worker = worker
        self.queue = queue
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen; return the port (useful when asked for port 0)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        logger.info(
            "worker %s: probes and metrics on %s:%d",
            self.worker.worker_id,
            self.host,
            self.port,
        )
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT)
            if len(head) > _MAX_REQUEST:
                raise ValueError("request too large")
            method, _, rest = head.decode("latin-1").partition(" ")
            path = rest.partition(" ")[0].split("?", 1)[0]
            status, body, kind = await self._answer(method, path)
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ValueError,
        ):
            status, body, kind = 400, "bad request\n", "text/plain"
        data = body.encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(
            status, "Service Unavailable" if status == 503 else "Method Not Allowed"
        )
        with contextlib.suppress(ConnectionError, OSError):
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
            writer.close()
            await writer.wait_closed()

    async def _answer(self, method: str, path: str) -> tuple[int, str, str]:
        if method != "GET":
            return 405, "only GET\n", "text/plain"
        if path in ("/healthz", "/readyz"):
            health = (
                liveness(self.worker) if path == "/healthz" else readiness(self.worker)
            )
            return (200 if health.ok else 503), health.reason + "\n", "text/plain"
        if path == "/backlog":
            return await backlog_json(self.queue)
        if path == "/metrics":
            text = await metrics_text(self.worker, self.queue)
            return 200, text, "text/plain; version=0.0.4"
        return 404, "not found: /healthz, /readyz, /metrics\n", "text/plain"
