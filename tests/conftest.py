"""Fixtures shared by the whole suite.

One real ``redis-server`` is started per test session on a free loopback
port (never 6379), with a password, exactly as embedded mode starts it. Each
test gets its own key namespace, so tests never see each other's keys.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from cortex_core.config import Settings
from cortex_core.embedded import EmbeddedRedis
from cortex_core.system import Services
from tests.fakes.kube_api import FakeKubeAPI


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis.start(tmp_path_factory.mktemp("redis"))
    if ":6379/" in server.url:
        server.stop(force=True)
        pytest.fail("the test Redis must never use port 6379")
    yield server
    server.stop(force=True)


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url


@pytest.fixture
def namespace() -> str:
    return f"test-{secrets.token_hex(4)}"


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, namespace: str) -> Settings:
    return Settings.load(
        {
            "redis_url": redis_url,
            "namespace": namespace,
            "data_dir": tmp_path / "data",
            "sim_latency_min": 0.01,
            "sim_latency_max": 0.02,
            "lease_seconds": 5.0,
            "shutdown_grace_seconds": 5.0,
        },
        environ={},
    )


@pytest.fixture
def child_env(settings: Settings) -> dict[str, str]:
    """Environment for a subprocess that should use the test's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORTEX_")}
    env.update(settings.to_env())
    return env


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    assert settings.redis_url is not None
    sv = await Services.connect(settings, settings.redis_url, name="test")
    yield sv
    await sv.close()


@pytest.fixture
async def raw_redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client, for tests that write malformed data on purpose."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=False)
    yield client
    await client.aclose()


@pytest.fixture
def kube_api() -> Iterator[FakeKubeAPI]:
    """A fake Kubernetes API on 127.0.0.1 with an ephemeral port."""
    fake = FakeKubeAPI().start()
    yield fake
    fake.stop()


@pytest.fixture
def kubeconfig(kube_api: FakeKubeAPI, tmp_path: Path) -> Path:
    return kube_api.write_kubeconfig(tmp_path / "kubeconfig")
