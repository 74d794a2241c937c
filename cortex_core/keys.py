"""Key names. Every key carries the same hash tag, ``{<namespace>}``, so that
the Lua scripts, which touch several keys at once, run on Redis Cluster too.

This module only spells names. Each key belongs to one module, which alone
reads and writes it:

- ``queue``: ``task:<id>``, ``pending:<priority>``, ``inflight``, ``dead``,
  ``idem:<key>``, ``paused``, ``wake``, ``events``
- ``limiter``: ``rl:log``, ``rl:amounts``, ``rl:used``, ``rl:pause``,
  ``rl:wake``, ``rl:usage:<bucket>``, ``rl:alerts``, ``rl:prio``,
  ``rl:api``
- ``heartbeat``: ``worker:<id>``, ``workers``
- ``resultcache``: ``rcache:<fingerprint>``, ``rcache:stats``
- ``backends.local``: ``backend:desired``, ``backend:supervisor``
"""

from __future__ import annotations

from dataclasses import dataclass

from cortex_core.models import Priority


@dataclass(frozen=True)
class Keyspace:
    namespace: str

    @property
    def tag(self) -> str:
        return "{" + self.namespace + "}"

    def key(self, *parts: str) -> str:
        return ":".join((self.tag, *parts))

    # queue
    def task(self, task_id: str) -> str:
        return self.key("task", task_id)

    def pending(self, priority: Priority | str) -> str:
        return self.key("pending", str(priority))

    @property
    def task_prefix(self) -> str:
        return self.key("task", "")

    @property
    def inflight(self) -> str:
        return self.key("inflight")

    @property
    def dead(self) -> str:
        return self.key("dead")

    @property
    def idem_prefix(self) -> str:
        return self.key("idem", "")

    @property
    def paused(self) -> str:
        return self.key("paused")

    @property
    def wake(self) -> str:
        return self.key("wake")

    @property
    def events(self) -> str:
        return self.key("events")

    # limiter
    def limiter(self, name: str) -> str:
        return self.key("rl", name)

    # resultcache
    def result_cache(self, fingerprint: str) -> str:
        return self.key("rcache", fingerprint)

    @property
    def result_cache_stats(self) -> str:
        return self.key("rcache", "stats")

    # heartbeat
    def worker(self, worker_id: str) -> str:
        return self.key("worker", worker_id)

    @property
    def workers(self) -> str:
        return self.key("workers")

    # local backend
    @property
    def backend_desired(self) -> str:
        return self.key("backend", "desired")

    @property
    def backend_supervisor(self) -> str:
        return self.key("backend", "supervisor")
