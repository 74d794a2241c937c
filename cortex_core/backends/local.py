"""The local backend: worker processes on this machine, supervised.

The desired count lives in Redis (``backend:desired``) so that ``cortex scale``
from another shell reaches the supervisor; the supervisor converges on it,
restarts a worker that exits with an error, and reads each process's CPU and
memory from the OS.

One process supervises at a time: the one holding ``backend:supervisor``, a
key with a short expiry that only its holder renews. Every other process that
runs :meth:`LocalBackend.supervise` (a second console, ``cortex up``) stands
by and takes the key, and the workers, when the holder quits or stops
renewing. A holder that finds its key taken stops its own workers first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis.asyncio as aioredis

from cortex_core.aio import raise_if_cancelled
from cortex_core.audit import AuditTrail
from cortex_core.config import MAX_LOCAL_WORKERS, Settings
from cortex_core.errors import BackendError
from cortex_core.keys import Keyspace
from cortex_core.queue import TaskQueue

logger = logging.getLogger(__name__)

MAX_WORKERS = MAX_LOCAL_WORKERS
_RESTART_BACKOFF_MAX = 30.0
#: A worker that ran this long before it failed starts its backoff afresh.
_HEALTHY_SECONDS = 10.0
#: The shortest period a worker's CPU % is measured over.
_CPU_SAMPLE_SECONDS = 0.5
#: The reason the tasks of a worker that exited with an error are settled with.
CRASH_REASON = "worker_crash"
#: The supervisor key lives this many supervision intervals unrenewed.
_LEAD_INTERVALS = 5

# Renew the supervisor key only for its holder: 1 if renewed, else 0.
_RENEW_LEAD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# Delete the supervisor key only for its holder.
_DROP_LEAD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass
class LocalProcess:
    name: str
    popen: subprocess.Popen[bytes]
    started_at: float
    started_mono: float = 0.0
    handle: psutil.Process | None = None
    stopping: bool = False
    log_path: Path | None = None
    cpu: float | None = None
    """CPU % over the last sampling period; None before the first one."""
    cpu_at: float = 0.0
    """Monotonic time of the last CPU sample (the priming one at start)."""

    @property
    def pid(self) -> int:
        return self.popen.pid


@dataclass(frozen=True)
class ProcessRow:
    """A worker process as the OS sees it."""

    name: str
    pid: int
    state: str
    cpu_percent: float | None
    rss_bytes: int | None
    started_at: float


@dataclass
class _Slot:
    restarts: int = 0
    next_start: float = 0.0
    last_exit: int | None = None
    history: list[float] = field(default_factory=list)


class LocalBackend:
    """Starts ``cortex worker`` processes and keeps their number as desired."""

    kind = "local"

    def __init__(
        self,
        settings: Settings,
        *,
        redis_url: str,
        client: aioredis.Redis,
        keys: Keyspace,
        extra_env: dict[str, str] | None = None,
        audit: AuditTrail | None = None,
    ) -> None:
        self.settings = settings
        self.redis_url = redis_url
        self.client = client
        self.keys = keys
        self.audit = audit
        self.queue = TaskQueue(client, keys, events_maxlen=settings.event_stream_length)
        self.extra_env = extra_env or {}
        self.processes: dict[str, LocalProcess] = {}
        self._slots: dict[str, _Slot] = {}
        self.desired = settings.workers
        self._supervising = False
        self.leading = False
        """True while this process holds the supervisor key and runs workers."""
        self._lead_value = ""
        self._lead_id = ""
        self._renew_lead = client.register_script(_RENEW_LEAD)
        self._drop_lead = client.register_script(_DROP_LEAD)

    # The desired count -------------------------------------------------------

    async def set_desired(self, count: int) -> int:
        if not 0 <= count <= MAX_WORKERS:
            raise BackendError(
                f"worker count must be between 0 and {MAX_WORKERS}, got {count}"
            )
        await self.client.set(self.keys.backend_desired, count)
        self.desired = count
        logger.info("local backend: desired workers set to %d", count)
        return count

    async def scale(self, delta: int) -> int:
        current = await self.read_desired()
        target = current + delta
        if not 0 <= target <= MAX_WORKERS:
            raise BackendError(
                f"cannot scale by {delta:+d}: {current} workers now, the count "
                f"must stay between 0 and {MAX_WORKERS}"
            )
        return await self.set_desired(target)

    async def read_desired(self) -> int:
        raw = await self.client.get(self.keys.backend_desired)
        if raw is None:
            return self.desired
        try:
            value = int(raw)
        except ValueError:
            logger.warning("local backend: ignoring malformed desired count %r", raw)
            return self.desired
        return max(0, min(MAX_WORKERS, value))

    async def supervisor_alive(self) -> bool:
        return bool(await self.client.exists(self.keys.backend_supervisor))

    async def superseded(self, lead_id: str) -> bool:
        """True when another supervisor than ``lead_id`` holds the claim (a
        missing claim is not proof: its holder may be renewing it)."""
        raw = await self.client.get(self.keys.backend_supervisor)
        if raw is None:
            return False
        try:
            holder = json.loads(raw).get("id")
        except (ValueError, AttributeError):
            return False
        return isinstance(holder, str) and holder != lead_id

    async def supervisor_pid(self) -> int | None:
        """The pid of the process that supervises the workers; None if none
        does, 0 if the key does not say."""
        raw = await self.client.get(self.keys.backend_supervisor)
        if raw is None:
            return None
        try:
            pid = json.loads(raw)["pid"]
        except (ValueError, KeyError, TypeError):
            return 0
        return pid if isinstance(pid, int) and pid > 0 else 0

    # Supervision -------------------------------------------------------------

    async def supervise(
        self, interval: float = 1.0, *, initial: int | None = None
    ) -> None:
        """Converge on the desired count until cancelled or ``stop_all``,
        while this process holds the supervisor key; stand by until then.

        ``initial`` becomes the desired count if this process takes the key
        on its first try (it starts the workers); one that takes over later
        keeps the count its predecessor had."""
        self._supervising = True
        first = True
        self._lead_id = secrets.token_hex(6)
        self._lead_value = json.dumps(
            {"pid": os.getpid(), "at": time.time(), "id": self._lead_id}
        )
        ttl_ms = max(1, int(interval * 1000 * _LEAD_INTERVALS))
        while self._supervising:
            try:
                took = await self._hold_lead(ttl_ms)
                if took and first and initial is not None:
                    await self.set_desired(initial)
                elif took:
                    logger.warning(
                        "local backend: took over the local workers (pid %d)",
                        os.getpid(),
                    )
                first = False
                self.desired = await self.read_desired()
            except (OSError, ConnectionError, aioredis.RedisError) as err:
                logger.debug("local backend: desired count unread (%s)", err)
            if not self._supervising:
                # stop_all() ran while the read was out (a cancel redis-py
                # swallowed): start nothing more.
                break
            if not self.leading:
                self._collect_exits()  # workers stopped when the lead was lost
                raise_if_cancelled()
                await asyncio.sleep(interval)
                continue
            # A crashed worker's tasks are settled before its name is used
            # again: the settling picks tasks by the worker's name.
            for name, code in self._collect_exits():
                await self.settle_crash(name, code)
            self._converge()
            raise_if_cancelled()
            await asyncio.sleep(interval)

    async def _hold_lead(self, ttl_ms: int) -> bool:
        """Renew the supervisor key, or take it if nobody holds it; True when
        this call took it."""
        key = self.keys.backend_supervisor
        if self.leading and await self._renew_lead([key], [self._lead_value, ttl_ms]):
            return False
        if await self.client.set(key, self._lead_value, nx=True, px=ttl_ms):
            if self.leading:
                return False
            self.leading = True
            logger.info(
                "local backend: supervising the local workers (pid %d)", os.getpid()
            )
            return True
        if self.leading:
            logger.warning(
                "local backend: another process took over supervision; "
                "stopping this process's %d workers",
                len(self.processes),
            )
            self.leading = False
            for proc in self.processes.values():
                self._terminate(proc)
        return False

    def reconcile(self) -> list[tuple[str, int]]:
        """Start, stop and restart processes to match ``self.desired``.

        Returns the workers that exited with an error since the last call,
        as (name, exit code); their tasks are for :meth:`settle_crash`.
        """
        crashed = self._collect_exits()
        self._converge()
        return crashed

    async def settle_crash(self, name: str, code: int) -> None:
        """Spend the attempt of every task worker ``name`` held when it died.

        Each goes back to its queue, or to the dead-letter queue on its last
        attempt with the reason ``worker_crash``. If Redis cannot be reached
        the leases expire instead and the reaper returns the tasks.
        """
        reason = f"{CRASH_REASON} (worker {name} exited with code {code})"
        try:
            out = await self.queue.worker_crashed(name, reason)
        except (OSError, ConnectionError, aioredis.RedisError) as err:
            logger.warning(
                "worker %s: its tasks are left to their leases (%s)", name, err
            )
            return
        if self.audit is not None:
            for task_id in out.returned:
                self.audit.record(task_id, "crashed", worker=name, reason=reason)
            for task_id in out.dead:
                self.audit.record(task_id, "dead", worker=name, reason=reason)

    def _collect_exits(self) -> list[tuple[str, int]]:
        now = time.monotonic()
        crashed: list[tuple[str, int]] = []
        for name, proc in list(self.processes.items()):
            code = proc.popen.poll()
            if code is None:
                continue
            del self.processes[name]
            slot = self._slots.setdefault(name, _Slot())
            slot.last_exit = code
            if proc.stopping or code == 0:
                logger.info("worker %s: exited (code %d)", name, code)
                continue
            crashed.append((name, code))
            if now - proc.started_mono >= _HEALTHY_SECONDS:
                slot.restarts = 0
            slot.restarts += 1
            delay = min(_RESTART_BACKOFF_MAX, 0.5 * 2 ** min(slot.restarts, 6))
            slot.next_start = now + delay
            logger.warning(
                "worker %s: exited with code %d; restarting in %.1fs (restart %d)",
                name,
                code,
                delay,
                slot.restarts,
            )
        return crashed

    def _converge(self) -> None:
        now = time.monotonic()
        active = [p for p in self.processes.values() if not p.stopping]
        if len(active) < self.desired:
            for name in self._free_names(self.desired - len(active)):
                slot = self._slots.setdefault(name, _Slot())
                if slot.next_start <= now:
                    self._spawn(name)
        elif len(active) > self.desired:
            extra = sorted(active, key=lambda p: _index(p.name), reverse=True)
            for proc in extra[: len(active) - self.desired]:
                self._terminate(proc)

    def _free_names(self, count: int) -> list[str]:
        names: list[str] = []
        n = 1
        while len(names) < count:
            name = f"local-{n}"
            if name not in self.processes:
                names.append(name)
            n += 1
        return names

    def _spawn(self, name: str) -> None:
        self.settings.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.settings.log_dir / f"{name}.log"
        env = dict(os.environ)
        env.update(self.settings.to_env())
        env.update(self.extra_env)
        env["CORTEX_REDIS_URL"] = self.redis_url
        env["PYTHONUNBUFFERED"] = "1"
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                [
                    *(sys.executable, "-m", "cortex_core.cli", "worker"),
                    *("--name", name, "--parent-pid", str(os.getpid())),
                    *(("--supervisor-id", self._lead_id) if self._lead_id else ()),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        handle: psutil.Process | None = None
        with contextlib.suppress(psutil.Error):
            handle = psutil.Process(popen.pid)
            handle.cpu_percent(None)
        self.processes[name] = LocalProcess(
            name,
            popen,
            time.time(),
            time.monotonic(),
            handle,
            log_path=log_path,
            cpu_at=time.monotonic(),
        )
        logger.info("worker %s: started (pid %d), log %s", name, popen.pid, log_path)

    def _terminate(self, proc: LocalProcess) -> None:
        if proc.stopping:
            return
        proc.stopping = True
        with contextlib.suppress(ProcessLookupError):
            proc.popen.send_signal(signal.SIGTERM)
        logger.info("worker %s: asked to stop (SIGTERM)", proc.name)

    def kill(self, name: str) -> None:
        """SIGKILL one worker (for chaos tests); the supervisor restarts it."""
        proc = self.processes.get(name)
        if proc is None:
            raise BackendError(f"no local worker named {name!r}")
        proc.popen.kill()

    async def stop_all(self, grace: float | None = None) -> None:
        """SIGTERM every worker and wait for them; SIGKILL after ``grace``."""
        if self._supervising:
            self._supervising = False
            if self.leading:
                self.leading = False
                with contextlib.suppress(OSError, ConnectionError, aioredis.RedisError):
                    await self._drop_lead(
                        [self.keys.backend_supervisor], [self._lead_value]
                    )
        self.desired = 0
        for proc in self.processes.values():
            self._terminate(proc)
        limit = (self.settings.shutdown_grace_seconds if grace is None else grace) + 5
        deadline = time.monotonic() + limit
        while self.processes and time.monotonic() < deadline:
            for name, proc in list(self.processes.items()):
                if proc.popen.poll() is not None:
                    del self.processes[name]
            await asyncio.sleep(0.05)
        for proc in self.processes.values():
            logger.error("worker %s: did not stop in %.0fs; killing", proc.name, limit)
            proc.popen.kill()
            proc.popen.wait(5)
        self.processes.clear()

    # Reading -----------------------------------------------------------------

    def rows(self) -> list[ProcessRow]:
        out = []
        now = time.monotonic()
        for proc in sorted(self.processes.values(), key=lambda p: _index(p.name)):
            rss: int | None = None
            state = "stopping" if proc.stopping else "running"
            if proc.popen.poll() is not None:
                state = "exited"
            elif proc.handle is not None:
                try:
                    # A sample over a few milliseconds is mostly rounding
                    # (a 300 % reading on 2 cores): keep the last one instead.
                    if now - proc.cpu_at >= _CPU_SAMPLE_SECONDS:
                        proc.cpu = proc.handle.cpu_percent(None)
                        proc.cpu_at = now
                    rss = proc.handle.memory_info().rss
                except psutil.Error:
                    pass
            cpu = proc.cpu if state != "exited" else None
            out.append(
                ProcessRow(proc.name, proc.pid, state, cpu, rss, proc.started_at)
            )
        return out


def _index(name: str) -> int:
    try:
        return int(name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 0
