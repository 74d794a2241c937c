"""The result cache: a finished conversation's result by its normalised query,
category, model and tool set, kept for a set time. Owns the ``rcache:*`` keys.

Apart from the Claude executor so that reading its counters (the console)
does not import the anthropic SDK.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence

import redis.asyncio as aioredis

from cortex_core.executor import Execution
from cortex_core.keys import Keyspace
from cortex_core.models import Task

logger = logging.getLogger(__name__)


class ResultCache:
    """Results of finished conversations by normalised query, category, model
    and tool set. Owns the ``rcache:*`` keys."""

    def __init__(self, client: aioredis.Redis, keys: Keyspace, ttl: float) -> None:
        self.client = client
        self.keys = keys
        self.ttl_ms = int(ttl * 1000)

    @staticmethod
    def fingerprint(task: Task, model: str, tools: Sequence[str]) -> str:
        query = " ".join(task.query.lower().split())
        raw = json.dumps([query, task.category, model, sorted(tools)])
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()

    async def get(self, fingerprint: str) -> Execution | None:
        raw = await self.client.get(self.keys.result_cache(fingerprint))
        if raw is None:
            await self._count("misses")
            return None
        try:
            data = json.loads(raw)
            execution = Execution(
                output=str(data["output"]),
                input_tokens=0,
                output_tokens=0,
                model=str(data["model"]),
                simulated=False,
                calls=0,
                stop_reason=str(data["stop_reason"]),
                cached=True,
            )
        except (ValueError, TypeError, KeyError) as err:
            logger.warning("result cache: ignoring a malformed entry (%s)", err)
            await self._count("misses")
            return None
        await self._count("hits")
        return execution

    async def put(self, fingerprint: str, execution: Execution) -> None:
        data = {
            "output": execution.output,
            "model": execution.model,
            "stop_reason": execution.stop_reason,
        }
        await self.client.set(
            self.keys.result_cache(fingerprint), json.dumps(data), px=self.ttl_ms
        )

    async def _count(self, what: str) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hincrby(self.keys.result_cache_stats, what, 1)
            pipe.expire(self.keys.result_cache_stats, 86_400)
            await pipe.execute()

    async def stats(self) -> tuple[int, int]:
        """Hits and misses over the last day of activity."""
        raw = await self.client.hmget(self.keys.result_cache_stats, ["hits", "misses"])
        return int(raw[0] or 0), int(raw[1] or 0)
