"""The embedded Redis: a real redis-server that cortex starts in a data folder."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import redis
from helpers import pid_alive, wait_for_sync

from cortex_core.embedded import EmbeddedRedis
from cortex_core.errors import EmbeddedRedisError


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    started = EmbeddedRedis.start(tmp_path / "redis")
    try:
        yield started
    finally:
        started.stop(force=True)


def _config(client: redis.Redis, name: str) -> str:
    value = client.config_get(name)[name]
    return str(value)


def test_runs_a_private_durable_server(server: EmbeddedRedis) -> None:
    """The server is append-only, never evicts, needs a password, on loopback."""
    url = urlsplit(server.url)
    assert url.hostname == "127.0.0.1"
    assert url.port is not None and url.port != 6379
    assert url.password
    assert server.owned and pid_alive(server.pid)
    with redis.Redis.from_url(server.url, decode_responses=True) as client:
        assert client.ping()
        assert _config(client, "appendonly") == "yes"
        assert _config(client, "appendfsync") == "everysec"
        assert _config(client, "maxmemory-policy") == "noeviction"
        assert _config(client, "requirepass") == url.password
        assert _config(client, "bind") == "127.0.0.1"
        assert _config(client, "port") == str(url.port)
    listening = [
        c
        for c in psutil.Process(server.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert listening
    assert {c.laddr.ip for c in listening} == {"127.0.0.1"}


def _ask(port: int, *commands: bytes) -> list[bytes]:
    """Send inline commands on a fresh connection; one reply line each."""
    replies = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        reader = sock.makefile("rb")
        for command in commands:
            sock.sendall(command + b"\r\n")
            replies.append(reader.readline().rstrip())
    return replies


def test_refuses_a_client_without_the_password(server: EmbeddedRedis) -> None:
    """A client that does not give the right password cannot run commands."""
    port = urlsplit(server.url).port
    assert port is not None
    anonymous = _ask(port, b"PING", b"SET k v", b"GET k")
    assert all(r.startswith(b"-NOAUTH") for r in anonymous), anonymous
    wrong = _ask(port, b"AUTH not-the-password", b"PING")
    assert wrong[0].startswith(b"-WRONGPASS"), wrong
    assert wrong[1].startswith(b"-NOAUTH"), wrong
    with redis.Redis.from_url(server.url) as client:
        assert client.exists("k") == 0


def test_keeps_its_files_private(server: EmbeddedRedis) -> None:
    """The data folder and the files that hold the password are owner-only."""
    assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700
    for name in ("redis.conf", "server.json"):
        mode = stat.S_IMODE((server.data_dir / name).stat().st_mode)
        assert mode == 0o600, f"{name} has mode {mode:o}"


def test_second_start_reuses_the_running_server(server: EmbeddedRedis) -> None:
    """A second start on the same folder uses the running server, not its own."""
    again = EmbeddedRedis.start(server.data_dir)
    assert not again.owned
    assert (again.url, again.pid) == (server.url, server.pid)
    with redis.Redis.from_url(again.url) as client:
        assert client.ping()


def test_the_last_user_to_leave_stops_it(server: EmbeddedRedis) -> None:
    """Whoever started it, the server stops with the last process using it."""
    again = EmbeddedRedis.start(server.data_dir)
    with redis.Redis.from_url(server.url) as first_users_client:
        assert first_users_client.ping()
        server.stop()
        assert pid_alive(server.pid), "stopped under a process still using it"
        assert (server.data_dir / "server.json").exists()
        assert first_users_client.ping()
    again.stop()
    assert not pid_alive(server.pid), "the last one out left it running"
    assert not (server.data_dir / "server.json").exists()


def test_the_last_user_reaps_a_server_this_process_left_running(
    server: EmbeddedRedis,
) -> None:
    """Its starter left it to another user in the same process (a console
    that closed one system and opened another): the last user's stop ends it
    and reaps it, rather than waiting out its timeout on the zombie."""
    again = EmbeddedRedis.start(server.data_dir)
    with redis.Redis.from_url(server.url) as client:
        assert client.ping()
        server.stop()  # left running: a client is connected
    assert pid_alive(server.pid)
    again.stop()
    assert not psutil.pid_exists(server.pid), "the redis-server is left a zombie"


def test_a_dead_server_is_started_again_on_the_same_address(
    server: EmbeddedRedis,
) -> None:
    """revive() brings a killed server back where its clients look for it."""
    assert not server.revive(), "revived a server that was running"
    old_pid = server.pid
    os.kill(old_pid, signal.SIGKILL)
    # The process reads as a zombie before all its threads are gone and it can
    # be reaped; until then revive() sees it running and returns False.
    wait_for_sync(server.revive, "revive() to start it again")
    assert server.pid != old_pid and pid_alive(server.pid)
    with redis.Redis.from_url(server.url) as client:
        assert client.ping()


def test_a_stale_state_file_is_not_followed(tmp_path: Path, redis_url: str) -> None:
    """server.json whose pid is not a redis-server is ignored, even when its
    URL answers (here: the suite's own Redis)."""
    data_dir = tmp_path / "redis"
    data_dir.mkdir()
    (data_dir / "server.json").write_text(
        json.dumps({"pid": os.getpid(), "url": redis_url})
    )
    started = EmbeddedRedis.start(data_dir)
    try:
        assert started.owned and started.url != redis_url
    finally:
        started.stop(force=True)


def test_stop_ends_the_process(tmp_path: Path) -> None:
    """stop() ends the redis-server and forgets it; data survives a restart."""
    data_dir = tmp_path / "redis"
    first = EmbeddedRedis.start(data_dir)
    try:
        with redis.Redis.from_url(first.url) as client:
            client.set("kept", "yes")
        pid = first.pid
        first.stop()
        assert not pid_alive(pid)
        assert not (data_dir / "server.json").exists()
        with (
            redis.Redis.from_url(first.url, socket_timeout=2) as client,
            pytest.raises(redis.ConnectionError),
        ):
            client.ping()
    finally:
        first.stop()
    second = EmbeddedRedis.start(data_dir)
    try:
        assert second.owned and second.pid != pid
        with redis.Redis.from_url(second.url) as client:
            assert client.get("kept") == b"yes"
    finally:
        second.stop()
    assert not pid_alive(second.pid)


def test_an_unwritable_state_file_is_an_error_and_leaves_no_server(
    tmp_path: Path,
) -> None:
    """server.json that cannot be written (here a folder): one clear error,
    and the server just started is stopped, not left for nobody to find."""
    data = tmp_path / "redis"
    (data / "server.json").mkdir(parents=True)
    with pytest.raises(EmbeddedRedisError, match=r"cannot write .*server\.json"):
        EmbeddedRedis.start(data)
    conf = str(data / "redis.conf")
    assert not [
        p for p in psutil.process_iter(["cmdline"]) if conf in (p.info["cmdline"] or [])
    ]
