"""Wiring: the Redis connection, the parts built on it, and the console's
control plane. ``System.open`` is what the CLI and the console start from."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeout

from cortex_core import connection
from cortex_core.audit import AuditTrail, RawJSON
from cortex_core.backends.kubernetes import ClusterView, KubernetesBackend
from cortex_core.backends.local import LocalBackend
from cortex_core.cluster.api import ClusterAPI
from cortex_core.config import Settings
from cortex_core.embedded import EmbeddedRedis
from cortex_core.errors import (
    BackendError,
    CortexError,
    EnqueueRefused,
    RedisUnavailable,
)
from cortex_core.heartbeat import Heartbeats, WorkerInfo
from cortex_core.keys import Keyspace
from cortex_core.limiter import Limits, RateLimiter
from cortex_core.models import KNOWN_CATEGORIES, PRIORITIES, Priority, Task
from cortex_core.queue import TaskQueue
from cortex_core.snapshot import (
    Header,
    Snapshot,
    TokenSeries,
    WorkerRow,
)
from cortex_core.workload import QUERY, reference_tasks

logger = logging.getLogger(__name__)


def limits_from(settings: Settings) -> Limits:
    return Limits(
        requests=settings.requests_per_minute,
        input_tokens=settings.input_tokens_per_minute,
        output_tokens=settings.output_tokens_per_minute,
        tokens=settings.tokens_per_minute,
    )


@dataclass
class Services:
    """The parts every cortex process builds on one Redis connection."""

    settings: Settings
    url: str
    client: aioredis.Redis
    keys: Keyspace
    queue: TaskQueue
    limiter: RateLimiter
    heartbeats: Heartbeats
    audit: AuditTrail
    server_info: dict[str, str]

    @classmethod
    async def connect(
        cls, settings: Settings, url: str, *, name: str = "cortex"
    ) -> Services:
        client = connection.connect(url, name=name)
        try:
            info = await connection.check(client, url)
        except RedisUnavailable:
            await client.aclose()
            raise
        keys = Keyspace(settings.namespace)
        limiter = RateLimiter(client, keys, limits_from(settings))
        with contextlib.suppress(OSError, aioredis.RedisError):
            await limiter.sync_clock()
        return cls(
            settings=settings,
            url=url,
            client=client,
            keys=keys,
            queue=TaskQueue(client, keys, events_maxlen=settings.event_stream_length),
            limiter=limiter,
            heartbeats=Heartbeats(client, keys),
            audit=AuditTrail(settings.audit_dir),
            server_info=info,
        )

    async def enqueue(self, tasks: list[Task]) -> list[tuple[str, bool]]:
        """Enqueue and write each new task to the audit trail."""
        payloads = [t.to_json() for t in tasks]
        try:
            results = await self.queue.enqueue_many(tasks, payloads)
        except EnqueueRefused as err:
            # Those Redis took are in the trail too; the caller names the rest.
            taken = {task_id for task_id, created in err.created if created}
            for task, payload in zip(tasks, payloads, strict=True):
                if task.id in taken:
                    self.audit.record(task.id, "enqueued", task=RawJSON(payload))
            raise
        for payload, (task_id, created) in zip(payloads, results, strict=True):
            if created:
                self.audit.record(task_id, "enqueued", task=RawJSON(payload))
        return results

    async def close(self) -> None:
        self.audit.close()
        await self.client.aclose()


class ControlPlane:
    """The console's way into the system (implements ``snapshot.Control``)."""

    def __init__(
        self, services: Services, backend: LocalBackend | KubernetesBackend | None
    ) -> None:
        self.services = services
        self.backend = backend
        s = services.settings
        kube = backend if isinstance(backend, KubernetesBackend) else None
        self._header = Header(
            mode="embedded" if s.embedded else "cluster",
            redis=s.redis_display(),
            namespace=s.namespace,
            simulated=s.simulated,
            token_limit=s.tokens_per_minute,
            backend=backend.kind if backend is not None else "none",
            desired_workers=backend.desired if backend is not None else None,
            kube_context=kube.api.target.context if kube else None,
            kube_namespace=kube.namespace if kube else None,
        )
        self._last: Snapshot | None = None
        self._outage_since: float | None = None
        policy = services.server_info.get("maxmemory_policy", "unknown")
        self._notices: tuple[str, ...] = ()
        if policy not in ("noeviction", "unknown"):
            self._notices = (
                f"Redis evicts keys (maxmemory-policy {policy}): queued tasks can "
                "be lost; set noeviction",
            )

    @property
    def header(self) -> Header:
        return self._header

    async def snapshot(self, log_limit: int = 200) -> Snapshot:
        sv = self.services
        try:
            depths = await sv.queue.depths()
            beats = await sv.heartbeats.alive()
            ends_at, series = await sv.limiter.series()
            events = await sv.queue.events(count=log_limit)
            desired = (
                await self.backend.read_desired()
                if isinstance(self.backend, LocalBackend)
                else None
            )
        except (OSError, ConnectionError, aioredis.RedisError) as err:
            unreachable = isinstance(
                err, OSError | ConnectionError | RedisConnectionError | RedisTimeout
            )
            error = f"Redis {'unreachable' if unreachable else 'error'}: {err}"
            if self._outage_since is None:
                self._outage_since = time.monotonic()
                logger.warning("console: %s; showing the last snapshot", error)
            if self._last is None:
                raise RedisUnavailable(error) from err
            return Snapshot(
                taken_at=time.time(),
                header=self._last.header,
                queues=self._last.queues,
                workers=self._last.workers,
                tokens=self._last.tokens,
                log=self._last.log,
                error=error,
            )
        if self._outage_since is not None:
            logger.info(
                "console: Redis back after %.1fs",
                time.monotonic() - self._outage_since,
            )
            self._outage_since = None
        header = Header(**{**self._header.__dict__, "desired_workers": desired})
        notices = self._notices
        if isinstance(self.backend, KubernetesBackend):
            view = await self.backend.view()
            header = _cluster_header(header, view)
            workers = _pod_rows(view, beats)
            if view.error:
                notices = (*notices, view.error)
        else:
            workers = self._worker_rows(beats)
        snap = Snapshot(
            taken_at=time.time(),
            header=header,
            queues=depths,
            workers=workers,
            tokens=TokenSeries(
                bucket_seconds=5,
                ends_at=ends_at,
                tokens_per_minute=series,
                limit=sv.settings.tokens_per_minute,
            ),
            log=[e.to_log_entry() for e in events],
            notices=notices,
        )
        self._last = snap
        return snap

    def _worker_rows(self, beats: list[WorkerInfo]) -> list[WorkerRow]:
        by_id = {b.worker_id: b for b in beats}
        rows: list[WorkerRow] = []
        if isinstance(self.backend, LocalBackend):
            for proc in self.backend.rows():
                beat = by_id.pop(proc.name, None)
                state = proc.state
                if beat is None and state == "running":
                    state = "starting"
                elif beat is not None and beat.state != "running":
                    state = beat.state
                rows.append(
                    WorkerRow(
                        name=proc.name,
                        state=state,
                        host=beat.host if beat else "",
                        pid=proc.pid,
                        cpu_percent=proc.cpu_percent,
                        rss_bytes=proc.rss_bytes,
                        current=tuple(beat.current) if beat else (),
                        done=beat.done if beat else 0,
                        failed=beat.failed if beat else 0,
                        tokens=beat.tokens if beat else 0,
                        started_at=proc.started_at,
                    )
                )
        rows.extend(_beat_rows(by_id))
        return rows

    async def enqueue(
        self, query: str, category: str, priority: Priority, count: int = 1
    ) -> list[str]:
        if not 1 <= count <= 1000:
            raise BackendError(f"count must be between 1 and 1000, got {count}")
        s = self.services.settings
        tasks = [
            Task.create(
                query=query,
                category=category,
                priority=priority,
                max_attempts=s.max_attempts,
            )
            for _ in range(count)
        ]
        results = await self.services.enqueue(tasks)
        return [task_id for task_id, _ in results]

    async def requeue(self, task_id: str) -> None:
        await self.services.queue.requeue(task_id)
        self.services.audit.record(task_id, "requeued", by="console")

    async def scale(self, delta: int) -> int:
        if self.backend is None:
            raise BackendError("no worker backend: this console cannot scale workers")
        return await self.backend.scale(delta)

    async def release_pin(self) -> str:
        if not isinstance(self.backend, KubernetesBackend):
            raise BackendError("only the kubernetes backend pins an autoscaler")
        return await self.backend.release_pin()

    async def close(self) -> None:
        return None


def _beat_rows(by_id: dict[str, WorkerInfo]) -> list[WorkerRow]:
    """Workers known only from their heartbeat, by id."""
    return [
        WorkerRow(
            name=beat.worker_id,
            state=beat.state,
            host=beat.host,
            pid=beat.pid,
            cpu_percent=beat.cpu_percent,
            rss_bytes=beat.rss_bytes,
            current=tuple(beat.current),
            done=beat.done,
            failed=beat.failed,
            tokens=beat.tokens,
            started_at=beat.started_at,
        )
        for beat in sorted(by_id.values(), key=lambda b: b.worker_id)
    ]


def _cluster_header(header: Header, view: ClusterView) -> Header:
    owner = view.autoscaler
    pinned = owner.pinned if owner is not None else None
    desired = pinned if pinned is not None else view.desired
    return Header(
        **{
            **header.__dict__,
            "desired_workers": desired,
            "autoscaler": owner.describe() if owner is not None else "none",
            "pinned": pinned,
        }
    )


def _pod_rows(view: ClusterView, beats: list[WorkerInfo]) -> list[WorkerRow]:
    """The worker pods joined with the heartbeats of the workers in them (by
    pod name, which the manifests pass as the worker id, or by host name)."""
    by_id = {b.worker_id: b for b in beats}
    by_host = {b.host: b.worker_id for b in beats}
    rows: list[WorkerRow] = []
    for pod in view.pods:
        key = pod.name if pod.name in by_id else by_host.get(pod.name, "")
        beat = by_id.pop(key, None)
        state = pod.state
        if beat is not None and state == "running" and beat.state != "running":
            state = beat.state
        rows.append(
            WorkerRow(
                name=pod.name,
                state=state,
                host=pod.node,
                cpu_percent=pod.cpu_percent,
                rss_bytes=pod.memory_bytes,
                current=tuple(beat.current) if beat else (),
                done=beat.done if beat else 0,
                failed=beat.failed if beat else 0,
                tokens=beat.tokens if beat else 0,
                started_at=pod.started_at,
                node=pod.node,
                restarts=pod.restarts,
            )
        )
    rows.extend(_beat_rows(by_id))
    return rows


class System:
    """Redis (embedded or configured), the parts, and optionally local workers."""

    def __init__(
        self,
        settings: Settings,
        services: Services,
        embedded: EmbeddedRedis | None,
        backend: LocalBackend | KubernetesBackend | None,
    ) -> None:
        self.settings = settings
        self.services = services
        self.embedded = embedded
        self.backend = backend
        self.control = ControlPlane(services, backend)
        self._background: list[asyncio.Task[None]] = []
        self._closing = asyncio.Event()

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, settings: Settings, *, start_workers: bool = True
    ) -> AsyncIterator[System]:
        settings.prepare_data_dir()
        embedded: EmbeddedRedis | None = None
        if settings.redis_url is None:
            embedded = await asyncio.to_thread(EmbeddedRedis.start, settings.redis_dir)
            url = embedded.url
        else:
            url = settings.redis_url
        try:
            services = await Services.connect(settings, url)
        except BaseException:
            if embedded is not None:
                embedded.stop()
            raise
        backend: LocalBackend | KubernetesBackend | None = None
        supervise = False
        if settings.backend == "kubernetes":
            try:
                backend = await kubernetes_backend(settings)
            except BaseException:
                await services.close()
                if embedded is not None:
                    embedded.stop()
                raise
        elif start_workers:
            backend = LocalBackend(
                settings,
                redis_url=url,
                client=services.client,
                keys=services.keys,
                audit=services.audit,
            )
            if await backend.supervisor_alive():
                # Another process (cortex up, another console) runs the local
                # workers; this one only reads and changes the desired count.
                logger.info("local backend: another supervisor runs the workers")
                backend.desired = await backend.read_desired()
            else:
                await backend.set_desired(settings.workers)
                supervise = True
        system = cls(settings, services, embedded, backend)
        if embedded is not None and embedded.owned:
            system._spawn(system._keep_embedded_up())
        if isinstance(backend, LocalBackend) and supervise:
            system._spawn(backend.supervise())
        if isinstance(backend, KubernetesBackend) and start_workers:
            # The console watches the pods; one-shot commands look once.
            system._spawn(backend.poll())
        try:
            yield system
        finally:
            await system._shutdown()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._background.append(asyncio.ensure_future(coro))

    def start_demo_load(self, *, trickle_seconds: float = 2.0) -> None:
        """The reference workload now, then a task every few seconds."""
        self._spawn(self._demo(trickle_seconds))

    async def _demo(self, trickle_seconds: float) -> None:
        rng = random.Random()
        attempts = self.settings.max_attempts
        try:
            await self.services.enqueue(reference_tasks(max_attempts=attempts))
            logger.info("demo: enqueued the 50-task reference workload")
            while not await self._closing_within(
                trickle_seconds * rng.uniform(0.5, 1.5)
            ):
                category = rng.choice(KNOWN_CATEGORIES)
                task = Task.create(
                    query=QUERY.format(category=category),
                    category=category,
                    priority=rng.choices(PRIORITIES, weights=(1, 2, 3, 4))[0],
                    max_attempts=attempts,
                )
                with contextlib.suppress(OSError, ConnectionError, aioredis.RedisError):
                    await self.services.enqueue([task])
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("demo: load generator stopped")

    async def _keep_embedded_up(self, interval: float = 1.0) -> None:
        """Start the embedded Redis again if it dies under this process."""
        assert self.embedded is not None
        while not await self._closing_within(interval):
            try:
                await asyncio.to_thread(self.embedded.revive)
            except CortexError as err:
                logger.error("embedded redis: could not start it again: %s", err)

    async def _closing_within(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True as soon as the system is closing."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), timeout=seconds)
        return self._closing.is_set()

    async def _shutdown(self) -> None:
        # Background loops end on the flag as well as on the cancel: redis-py
        # can swallow a cancel that lands inside a pipeline, and a shutdown
        # waiting on such a loop would never end.
        self._closing.set()
        for job in self._background:
            job.cancel()
        if self._background:
            _, stuck = await asyncio.wait(self._background, timeout=5.0)
            for job in stuck:
                logger.error("shutdown: %s did not stop in 5s", job.get_coro())
        if self.backend is not None:
            await self.backend.stop_all()
        await self.services.close()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)


async def kubernetes_backend(settings: Settings) -> KubernetesBackend:
    """The worker Deployment's backend, connected as the settings say."""
    api = await asyncio.to_thread(
        ClusterAPI.connect,
        kubeconfig=settings.kubeconfig,
        context=settings.kube_context,
        namespace=settings.kube_namespace,
        timeout=settings.kube_timeout_seconds,
    )
    return KubernetesBackend(settings, api)
