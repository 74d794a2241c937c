"""Redis URLs: redis://, rediss:// and Sentinel URLs, the last against a real
redis-server in Sentinel mode that watches the suite's test Redis."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from helpers import wait_for_sync

from cortex_core import connection
from cortex_core.config import Settings, redact_url
from cortex_core.embedded import EmbeddedRedis, find_redis_server, free_port
from cortex_core.errors import ConfigError
from cortex_core.redis_url import parse_sentinel

MASTER = "cortex-test"


@pytest.fixture(scope="module")
def sentinel(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, str]]:
    """A Sentinel on a free loopback port monitoring the test Redis; yields
    (sentinel port, master password)."""
    parts = urlsplit(redis_server.url)
    assert parts.hostname == "127.0.0.1" and parts.port != 6379
    password = parts.password or ""
    port = free_port()
    workdir = tmp_path_factory.mktemp("sentinel")
    conf = workdir / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {parts.port} 1\n"
        f"sentinel auth-pass {MASTER} {password}\n"
    )
    conf.chmod(0o600)
    proc = subprocess.Popen(
        [find_redis_server(), str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)

        def up() -> bool:
            try:
                return bool(client.sentinel_get_master_addr_by_name(MASTER))
            except redis.RedisError:
                return False

        wait_for_sync(up, "the test Sentinel to come up")
        client.close()
        yield port, password
    finally:
        proc.terminate()
        proc.wait(10)


def test_sentinel_url_parsing() -> None:
    t = parse_sentinel(
        "redis+sentinel://:p%40ss@s-0:26380,s-1/mymaster/2?sentinel_password=x"
    )
    assert t.sentinels == (("s-0", 26380), ("s-1", 26379))
    assert (t.master, t.db, t.password, t.username) == ("mymaster", 2, "p@ss", None)
    assert t.sentinel_password == "x" and t.tls is False
    assert parse_sentinel("rediss+sentinel://s:1/m").tls is True


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://s-0:26379", "names the master"),
        ("redis+sentinel://s-0:26379/", "names the master"),
        ("redis+sentinel://s-0:abc/m", "bad port"),
        ("redis+sentinel://:pw@,s-1/m", "HOST:PORT"),
        ("redis+sentinel://s-0/m/x", "database must be a number"),
        ("redis+sentinel://s-0/m/1/2", "only /MASTER or /MASTER/DB"),
        ("redis+sentinel://s-0/m?ssl=1", "unknown Sentinel URL parameter 'ssl'"),
        ("http://s-0/m", "scheme must be one of"),
    ],
)
def test_bad_redis_urls_name_the_field_and_rule(
    url: str, message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="redis_url") as info:
        Settings.load({"redis_url": url, "data_dir": tmp_path})
    assert message in str(info.value)


def test_secrets_never_shown() -> None:
    url = "redis+sentinel://:hunter2@s-0:26379,s-1:26379/m?sentinel_password=pw2"
    shown = redact_url(url)
    assert "hunter2" not in shown and "pw2" not in shown
    assert shown == "redis+sentinel://s-0:26379,s-1:26379/m"


async def test_sentinel_url_reaches_the_master(
    sentinel: tuple[int, str], tmp_path: Path
) -> None:
    port, password = sentinel
    url = f"redis+sentinel://:{password}@127.0.0.1:{port}/{MASTER}"
    settings = Settings.load({"redis_url": url, "data_dir": tmp_path})
    assert settings.redis_display() == f"redis+sentinel://127.0.0.1:{port}/{MASTER}"
    client = connection.connect(url, name="sentinel-test")
    try:
        info = await connection.check(client, url)
        assert info["maxmemory_policy"] == "noeviction"
        await client.set(b"cortex-sentinel-test", b"1", ex=30)
        assert await client.get(b"cortex-sentinel-test") == b"1"
        await client.delete(b"cortex-sentinel-test")
    finally:
        await client.aclose()


async def test_sentinel_url_with_wrong_password_is_a_clear_error(
    sentinel: tuple[int, str],
) -> None:
    port, _ = sentinel
    url = f"redis+sentinel://:wrong@127.0.0.1:{port}/{MASTER}"
    client = connection.connect(url)
    try:
        with pytest.raises(Exception, match="authentication failed") as info:
            await connection.check(client, url)
        assert "wrong" not in str(info.value)
    finally:
        await client.aclose()


def test_rediss_url_makes_a_tls_client(redis_server: EmbeddedRedis) -> None:
    """TLS is redis-py's own: a rediss:// URL gives TLS connections to the
    same host and port (the test Redis has no TLS to complete a handshake)."""
    url = redis_server.url.replace("redis://", "rediss://", 1)
    Settings.load({"redis_url": url})
    client = connection.connect(url)
    pool = client.connection_pool
    assert pool.connection_class.__name__ == "SSLConnection"
    assert pool.connection_kwargs["host"] == "127.0.0.1"
    assert pool.connection_kwargs["port"] == urlsplit(url).port
