"""Worker heartbeats: a record per worker that expires unless renewed."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field

import redis.asyncio as aioredis

from cortex_core.keys import Keyspace

logger = logging.getLogger(__name__)

#: A record lives this many heartbeat intervals without renewal.
EXPIRY_INTERVALS = 5


@dataclass
class WorkerInfo:
    """What a worker says about itself in each heartbeat."""

    worker_id: str
    host: str
    pid: int
    started_at: float
    state: str = "running"
    current: list[str] = field(default_factory=list)
    done: int = 0
    failed: int = 0
    tokens: int = 0
    cpu_percent: float = 0.0
    rss_bytes: int = 0
    concurrency: int = 0
    beat_at: float = 0.0
    rate_limited: dict[str, float] = field(default_factory=dict)
    """Task id to the time of its next attempt, for tasks held by a limit."""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> WorkerInfo | None:
        """Decode a heartbeat; None (and a log line) when it is malformed."""
        try:
            data = json.loads(raw)
            return cls(**data)
        except (ValueError, TypeError) as err:
            logger.warning("heartbeat: ignoring a malformed record (%s)", err)
            return None


# KEYS: the workers index
# ARGV: the prefix of a worker record's key
# Returns {ids, records}: every id in the index and its record (false where
# the record expired). The records share the index's hash tag.
_ALIVE = """
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
if #ids == 0 then return {ids, {}} end
local keys = {}
for i, id in ipairs(ids) do keys[i] = ARGV[1] .. id end
return {ids, redis.call('MGET', unpack(keys))}
"""


class Heartbeats:
    """Owns the ``worker:<id>`` records and the ``workers`` index."""

    def __init__(
        self, client: aioredis.Redis, keys: Keyspace, *, interval: float = 2.0
    ) -> None:
        self.client = client
        self.keys = keys
        self.interval = interval
        self._alive = client.register_script(_ALIVE)

    @property
    def ttl_ms(self) -> int:
        return int(self.interval * EXPIRY_INTERVALS * 1000)

    async def beat(self, info: WorkerInfo) -> None:
        info.beat_at = time.time()
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.worker(info.worker_id), info.to_json(), px=self.ttl_ms)
            pipe.zadd(self.keys.workers, {info.worker_id: info.beat_at})
            await pipe.execute()

    async def remove(self, worker_id: str) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.delete(self.keys.worker(worker_id))
            pipe.zrem(self.keys.workers, worker_id)
            await pipe.execute()

    async def alive(self) -> list[WorkerInfo]:
        """Workers whose record has not expired, by id; prunes the index.

        One round trip (the console calls this every refresh), two when an
        entry must be pruned."""
        reply = await self._alive([self.keys.workers], [self.keys.worker("")])
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in reply[0]]
        if not ids:
            return []
        raws = reply[1]
        out: list[WorkerInfo] = []
        gone: list[str] = []
        for worker_id, raw in zip(ids, raws, strict=True):
            if raw is None:
                gone.append(worker_id)
                continue
            info = WorkerInfo.from_json(raw)
            if info is not None:
                out.append(info)
        if gone:
            # Only drop entries that stayed silent past the record's expiry.
            cutoff = time.time() - self.ttl_ms / 1000.0
            await self.client.zremrangebyscore(self.keys.workers, "-inf", cutoff)
        return out
