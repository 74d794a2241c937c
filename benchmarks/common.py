"""Shared set-up: a private redis-server and the parts built on it."""

from __future__ import annotations

import contextlib
import secrets
import statistics
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from cortex_core.config import Settings
from cortex_core.embedded import EmbeddedRedis
from cortex_core.system import Services


@contextlib.contextmanager
def private_redis() -> Iterator[tuple[Path, str]]:
    """A redis-server of its own in a temporary folder: (folder, url)."""
    with tempfile.TemporaryDirectory(prefix="cortex-bench-") as tmp:
        server = EmbeddedRedis.start(Path(tmp) / "redis")
        try:
            yield Path(tmp), server.url
        finally:
            server.stop()


@contextlib.asynccontextmanager
async def bench_services(tmp: Path, url: str) -> AsyncIterator[Services]:
    """Services on fresh keys, with no token budget."""
    settings = Settings.load(
        {
            "redis_url": url,
            "namespace": f"bench-{secrets.token_hex(4)}",
            "data_dir": tmp / secrets.token_hex(4),
            "tokens_per_minute": 0,
        },
        environ={},
    )
    sv = await Services.connect(settings, url, name="bench")
    try:
        yield sv
    finally:
        await sv.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


median = statistics.median
