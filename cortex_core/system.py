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

from cortex_core import alerts, connection
from cortex_core.aio import raise_if_cancelled, where
from cortex_core.apistatus import ApiStatus, read_api_status
from cortex_core.audit import AuditTrail, RawJSON
from cortex_core.backends.kubernetes import (
    MAX_REPLICAS,
    ClusterView,
    KubernetesBackend,
)
from cortex_core.backends.local import LocalBackend
from cortex_core.cluster.api import ClusterAPI
from cortex_core.config import MAX_LOCAL_WORKERS, Settings
from cortex_core.embedded import EmbeddedRedis
from cortex_core.errors import (
    BackendError,
    CortexError,
    EnqueueRefused,
    InvalidTransition,
    ReadOnlyMode,
    RedisUnavailable,
    UnknownTask,
)
from cortex_core.heartbeat import Heartbeats, WorkerInfo
from cortex_core.keys import Keyspace
from cortex_core.limiter import Limits, RateLimiter
from cortex_core.models import KNOWN_CATEGORIES, PRIORITIES, Priority, Task
from cortex_core.queue import CANCEL_REASON, TaskQueue
from cortex_core.resultcache import ResultCache
from cortex_core.snapshot import (
    Header,
    HistoryEntry,
    ScaleInfo,
    Snapshot,
    TaskDetail,
    TaskFilter,
    TaskPage,
    TokenSeries,
    WorkerRow,
)
from cortex_core.workload import QUERY, reference_tasks

logger = logging.getLogger(__name__)

MISSING_AFTER_SECONDS = 15.0
"""A local worker with no heartbeat this long after its start is missing."""
MAX_PAGE = 2000
"""Most tasks one list page reads."""


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
        limiter = RateLimiter(
            client,
            keys,
            limits_from(settings),
            window_seconds=settings.rate_window_seconds,
            held_share=settings.held_share,
        )
        with contextlib.suppress(OSError, aioredis.RedisError):
            await limiter.sync_clock()
        return cls(
            settings=settings,
            url=url,
            client=client,
            keys=keys,
            queue=TaskQueue(
                client,
                keys,
                events_maxlen=settings.event_stream_length,
                aging_ms=round(settings.aging_seconds * 1000),
            ),
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
            ends_at, inputs, outputs = await sv.limiter.series_split()
            api = await self._api_status(beats)
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
                alerts=[
                    "Redis reconnecting",
                    *(a for a in self._last.alerts if a != "Redis reconnecting"),
                ],
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
        tokens = TokenSeries(
            bucket_seconds=5,
            ends_at=ends_at,
            tokens_per_minute=[i + o for i, o in zip(inputs, outputs, strict=True)],
            limit=sv.settings.tokens_per_minute,
            input_per_minute=inputs,
            output_per_minute=outputs,
            input_limit=sv.limiter.effective_limit("input_tokens"),
            output_limit=sv.limiter.effective_limit("output_tokens"),
        )
        snap = Snapshot(
            taken_at=time.time(),
            header=header,
            queues=depths,
            workers=workers,
            tokens=tokens,
            log=[e.to_log_entry() for e in events],
            api=api,
            notices=(*notices, *api.notices(sv.limiter.server_now())),
            alerts=alerts.alerts(
                queues=depths,
                tokens=tokens,
                workers=workers,
                queue_age_limit=sv.settings.alert_queue_age_seconds,
            ),
        )
        self._last = snap
        return snap

    async def _api_status(self, beats: list[WorkerInfo]) -> ApiStatus:
        sv = self.services
        await sv.limiter.refresh_learned()
        cache = await ResultCache(sv.client, sv.keys, 0).stats()
        return await read_api_status(sv.limiter, beats, cache)

    def _worker_rows(self, beats: list[WorkerInfo]) -> list[WorkerRow]:
        by_id = {b.worker_id: b for b in beats}
        rows: list[WorkerRow] = []
        if isinstance(self.backend, LocalBackend):
            for proc in self.backend.rows():
                beat = by_id.pop(proc.name, None)
                state = proc.state
                if beat is None and state == "running":
                    age = time.time() - proc.started_at
                    state = "missing" if age > MISSING_AFTER_SECONDS else "starting"
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
                        started_at=proc.started_at,
                        **_beat_counts(beat),
                    )
                )
        rows.extend(_beat_rows(by_id))
        return rows

    async def enqueue(
        self, query: str, category: str, priority: Priority, count: int = 1
    ) -> list[str]:
        self._check_writable("enqueue")
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
        self._check_writable("requeue")
        await self.services.queue.requeue(task_id)
        self.services.audit.record(task_id, "requeued", by="console")

    async def scale(self, delta: int) -> int:
        self._check_writable("scale")
        if self.backend is None:
            raise BackendError("no worker backend: this console cannot scale workers")
        return await self.backend.scale(delta)

    async def release_pin(self) -> str:
        self._check_writable("release")
        if not isinstance(self.backend, KubernetesBackend):
            raise BackendError("only the kubernetes backend pins an autoscaler")
        return await self.backend.release_pin()

    async def scale_to(self, count: int) -> int:
        self._check_writable("scale")
        if self.backend is None:
            raise BackendError("no worker backend: this console cannot scale workers")
        return await self.backend.set_desired(count)

    async def scale_info(self) -> ScaleInfo:
        if self.backend is None:
            beats = await self.services.heartbeats.alive()
            return ScaleInfo(len(beats), None, "nothing", can_scale=False)
        if isinstance(self.backend, KubernetesBackend):
            view = await self.backend.refresh()
            running = sum(p.state == "running" for p in view.pods)
            scaler = view.autoscaler
            pinned = scaler.pinned if scaler is not None else None
            return ScaleInfo(
                running,
                pinned if pinned is not None else view.desired,
                f"autoscaler {scaler.describe()}"
                if scaler is not None
                else "nothing (the Deployment's replicas)",
                can_scale=view.desired is not None,
                maximum=MAX_REPLICAS,
            )
        running = sum(r.state == "running" for r in self.backend.rows())
        pid = await self.backend.supervisor_pid()
        if pid is None:
            owner = "nothing (no supervisor runs; the count is only recorded)"
        elif self.backend.leading:
            owner = "local supervisor (this process)"
        else:
            owner = f"local supervisor (pid {pid}; this process stands by)"
        if not self.backend.rows():
            running = len(await self.services.heartbeats.alive())
        desired = await self.backend.read_desired()
        return ScaleInfo(
            running, desired, owner, can_scale=True, maximum=MAX_LOCAL_WORKERS
        )

    async def tasks(
        self, view: str, task_filter: TaskFilter, offset: int = 0, limit: int = 200
    ) -> TaskPage:
        if view not in ("tasks", "dead"):
            raise BackendError(f"no list called {view!r}: tasks or dead")
        if offset < 0 or not 1 <= limit <= MAX_PAGE:
            raise BackendError(f"a page is 1 to {MAX_PAGE} tasks from offset >= 0")
        states = ["dead"] if view == "dead" else list(_LIST_ORDER)
        if task_filter.states:
            states = [s for s in states if s in task_filter.states]
        priorities = [str(p) for p in PRIORITIES]
        if task_filter.priorities:
            priorities = [p for p in priorities if p in task_filter.priorities]
        queue = self.services.queue
        # Free text and categories are not indexed: read a wider window.
        window = limit if task_filter.empty else min(MAX_PAGE, 5 * limit)
        ids, total = await queue.page(states, priorities, offset, window)
        rows = [r for r in await queue.rows(ids) if task_filter.matches(r)]
        unindexed_priority = bool(task_filter.priorities) and bool(
            {"running", "dead"} & set(states)
        )
        exact = not (task_filter.text or task_filter.categories or unindexed_priority)
        kept = rows[:limit]
        # A page cut short by ``limit`` resumes after the last row it shows.
        scanned = len(ids) if len(rows) <= limit else ids.index(kept[-1].task_id) + 1
        return TaskPage(
            rows=kept, offset=offset, scanned=scanned, total=total, exact=exact
        )

    async def task_detail(self, task_id: str) -> TaskDetail:
        sv = self.services
        record = await sv.queue.get(task_id)
        rows = await sv.queue.rows([task_id])
        if not rows:
            raise UnknownTask(f"no task with id {task_id!r}")
        events = await sv.queue.task_events(task_id, sv.settings.event_stream_length)
        history = [
            HistoryEntry(e.at, e.kind, e.worker, e.attempt, e.detail) for e in events
        ]
        files = await asyncio.to_thread(sv.audit.files_of, task_id)
        return TaskDetail(
            row=rows[0],
            query=record.task.query
            if record.task
            else record.payload.decode("utf-8", "replace"),
            history=history,
            result=record.result,
            audit_files=[str(f) for f in files],
            problem=record.decode_error or "",
        )

    async def requeue_dead(self, task_filter: TaskFilter) -> int:
        self._check_writable("requeue")
        queue = self.services.queue
        chosen: list[str] = []
        offset = 0
        while True:
            ids = await queue.dead_ids(limit=offset + MAX_PAGE)
            chunk = ids[offset:]
            if not chunk:
                break
            chosen += [
                r.task_id for r in await queue.rows(chunk) if task_filter.matches(r)
            ]
            offset += len(chunk)
        done = 0
        for task_id in chosen:
            try:
                await queue.requeue(task_id)
            except (UnknownTask, InvalidTransition) as err:
                logger.info("task %s: not requeued: %s", task_id, err)
                continue
            self.services.audit.record(task_id, "requeued", by="console")
            done += 1
        return done

    async def delete_dead(self, task_id: str) -> None:
        self._check_writable("delete")
        await self.services.queue.delete_dead(task_id)
        self.services.audit.record(task_id, "deleted", by="console")

    async def cancel(self, task_id: str) -> None:
        self._check_writable("cancel")
        await self.services.queue.cancel(task_id, CANCEL_REASON)
        self.services.audit.record(
            task_id, "cancelled", by="console", reason=CANCEL_REASON
        )

    async def pause(self, priority: Priority | None = None) -> None:
        self._check_writable("pause")
        await self.services.queue.pause(priority)

    async def resume(self, priority: Priority | None = None) -> None:
        self._check_writable("resume")
        await self.services.queue.resume(priority)

    async def drain(self) -> None:
        self._check_writable("drain")
        await self.services.queue.drain()

    def _check_writable(self, action: str) -> None:
        if self.services.settings.read_only:
            raise ReadOnlyMode(f"read-only mode: {action} is not allowed")

    async def close(self) -> None:
        return None


def _beat_counts(beat: WorkerInfo | None) -> dict[str, Any]:
    """What a worker row takes from the worker's heartbeat, when it has one."""
    if beat is None:
        return {}
    return {
        "current": tuple(beat.current),
        "done": beat.done,
        "failed": beat.failed,
        "tokens": beat.tokens,
    }


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
            started_at=beat.started_at,
            **_beat_counts(beat),
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
                started_at=pod.started_at,
                node=pod.node,
                restarts=pod.restarts,
                **_beat_counts(beat),
            )
        )
    rows.extend(_beat_rows(by_id))
    return rows


_LIST_ORDER = ("running", "pending", "dead", "done")
"""The tasks view lists running tasks first, then waiting, dead and done."""


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
        try:
            if settings.backend == "kubernetes":
                backend = await kubernetes_backend(settings)
            elif start_workers:
                backend = LocalBackend(
                    settings,
                    redis_url=url,
                    client=services.client,
                    keys=services.keys,
                    audit=services.audit,
                )
                # The first process to take the supervisor claim sets the
                # count from its settings; one that stands by, or takes over
                # later, keeps the count in Redis.
                backend.desired = await backend.read_desired()
        except BaseException:
            # Nothing started here may outlive a failed start.
            await services.close()
            if embedded is not None:
                embedded.stop()
            raise
        system = cls(settings, services, embedded, backend)
        if embedded is not None:
            system._spawn(system._keep_embedded_up(), "embedded redis keeper")
        if isinstance(backend, LocalBackend):
            system._spawn(
                backend.supervise(initial=settings.workers), "local supervisor"
            )
        if isinstance(backend, KubernetesBackend) and start_workers:
            # The console watches the pods; one-shot commands look once.
            system._spawn(backend.poll(), "kubernetes poller")
        try:
            yield system
        finally:
            await system._shutdown()

    @property
    def local_workers(self) -> int:
        """Worker processes this process runs (0 while another supervises)."""
        if isinstance(self.backend, LocalBackend):
            return sum(not p.stopping for p in self.backend.processes.values())
        return 0

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._background.append(asyncio.create_task(coro, name=name))

    def start_demo_load(self, *, trickle_seconds: float = 2.0) -> None:
        """The reference workload now, then a task every few seconds."""
        self._spawn(self._demo(trickle_seconds), "demo load")

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
        """Start the embedded Redis again if it dies, whoever started it."""
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
        raise_if_cancelled()
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
                logger.error("shutdown: a loop did not stop in 5s: %s", where(job))
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
