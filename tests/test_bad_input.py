"""Bad input at every boundary, one test per row of the README's table: each
fails with one clear line naming what is wrong, and nothing is lost.

Bad queries, categories and priorities given to ``cortex enqueue`` are in
test_cli.py; fields of the task model in test_models.py; bad JSON and
non-UTF-8 payloads in a queue in test_worker.py. This file holds the rest.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio as aioredis
from helpers import make_task, make_worker, run_cli, running, wait_for

from cortex_core.backends.local import LocalBackend
from cortex_core.embedded import free_port
from cortex_core.errors import BackendError, TaskValidationError, UnknownTask
from cortex_core.models import MAX_QUERY_BYTES
from cortex_core.system import ControlPlane, Services

_BAD_ID = "0123456789abcdef0123abcd"


def _error_line(result: object) -> str:
    code = getattr(result, "returncode", 0)
    stderr = str(getattr(result, "stderr", ""))
    assert code != 0, getattr(result, "stdout", "")
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("cortex")]
    assert len(lines) == 1, stderr
    return lines[0]


def _with_password(url: str, password: str | None) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = host if password is None else f":{password}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


# Redis connection ------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        pytest.param("not-the-password", "password or user was refused", id="wrong"),
        pytest.param(None, "the URL gives none", id="missing"),
    ],
)
def test_wrong_redis_password_is_named(
    redis_url: str, child_env: dict[str, str], password: str | None, expected: str
) -> None:
    """A wrong or missing password: one line, no password shown."""
    url = _with_password(redis_url, password)
    result = run_cli("status", "--redis-url", url, env=child_env)
    line = _error_line(result)
    assert "authentication failed" in line and expected in line, line
    secret = urlsplit(redis_url).password
    assert secret and secret not in result.stderr
    if password:
        assert password not in result.stderr


@pytest.mark.parametrize("command", ["status", "worker", "restore"])
def test_redis_unreachable_at_start(child_env: dict[str, str], command: str) -> None:
    """Nothing listens on the port: every command says so and exits 2."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = run_cli(command, "--redis-url", url, env=child_env, timeout=60)
    line = _error_line(result)
    assert result.returncode == 2
    assert "unreachable" in line and f"{urlsplit(url).port}" in line, line


@contextlib.contextmanager
def _tls_only_server() -> Iterator[int]:
    """A loopback server that, like a TLS-only Redis, drops a client whose
    first bytes are not a TLS handshake."""
    server = socket.create_server(("127.0.0.1", 0))
    port = int(server.getsockname()[1])
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    first = conn.recv(1)
                    if first == b"\x16":
                        conn.recv(65536)
                # Not a TLS ClientHello (0x16): reset, as a TLS server does.
                conn.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2
                )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        server.close()
        thread.join(5)


def test_tls_required_but_not_used(child_env: dict[str, str]) -> None:
    """redis:// to a server that wants TLS: named, with the fix."""
    with _tls_only_server() as port:
        result = run_cli(
            "status", "--redis-url", f"redis://127.0.0.1:{port}/0", env=child_env
        )
    line = _error_line(result)
    assert "unreachable" in line and "rediss://" in line, line


def test_tls_used_against_a_plain_server(
    redis_url: str, child_env: dict[str, str]
) -> None:
    """rediss:// to a server without TLS: named, with the fix."""
    url = redis_url.replace("redis://", "rediss://", 1)
    line = _error_line(run_cli("status", "--redis-url", url, env=child_env))
    assert "unreachable" in line and "redis:// URL" in line, line


# Payloads in a queue ---------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        pytest.param(
            lambda t: {**t, "owner": "someone"}, "owner: Extra inputs", id="unknown"
        ),
        pytest.param(
            lambda t: {**t, "query": "q" * (MAX_QUERY_BYTES * 64)},
            "query: at most 16384 bytes",
            id="huge-query",
        ),
        pytest.param(
            lambda t: {**t, "labels": {f"k{i}": "v" * 100 for i in range(50_000)}},
            "labels: Extra inputs",
            id="huge-metadata",
        ),
    ],
)
async def test_bad_stored_task_is_dead_lettered_with_its_reason(
    services: Services, raw_redis: aioredis.Redis, payload: object, reason: str
) -> None:
    """A stored task with an unknown field, a query over the limit, or five
    megabytes of metadata is dead-lettered naming the field; others flow."""
    bad = make_task()
    body = payload(json.loads(bad.to_json()))  # type: ignore[operator]
    await services.queue.enqueue_many([bad], [json.dumps(body).encode()])
    good = make_task()
    await services.enqueue([good])
    async with running(make_worker(services)) as job:
        await wait_for(
            lambda: _state(services, good.id, "done"), "the good task to finish"
        )
        await wait_for(lambda: _state(services, bad.id, "dead"), "the bad one dead")
        assert not job.done(), "the worker stopped"
    record = await services.queue.get(bad.id)
    assert record.reason.startswith("decode:") and reason in record.reason
    assert len(record.reason) <= 2000
    depths = await services.queue.depths()
    assert (depths.total_pending, depths.in_flight, depths.dead) == (0, 0, 1)


async def _state(services: Services, task_id: str, state: str) -> bool:
    return (await services.queue.get(task_id)).state == state


# Producers and operator actions ----------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--idempotency-key", "k" * 201], id="huge-idempotency-key"),
        pytest.param(["--count", "100001"], id="absurd-count"),
        pytest.param(["--count", "-3"], id="negative-count"),
    ],
)
async def test_enqueue_refuses_oversized_options(
    services: Services, child_env: dict[str, str], args: list[str]
) -> None:
    """An idempotency key over 200 bytes or a count outside 1..100000."""
    result = run_cli(
        "enqueue", "q", "--category", "cicd", "--priority", "low", *args, env=child_env
    )
    line = _error_line(result)
    assert args[0].lstrip("-").replace("-", "_") in line or args[0] in line, line
    assert (await services.queue.depths()).total_pending == 0


async def test_console_actions_refuse_bad_input(services: Services) -> None:
    """The console's enqueue, requeue and scale name the problem and change
    nothing: huge query, unknown id, negative or absurd worker count."""
    backend = LocalBackend(
        services.settings,
        redis_url=services.url,
        client=services.client,
        keys=services.keys,
    )
    control = ControlPlane(services, backend)
    with pytest.raises(TaskValidationError, match="query: at most"):
        await control.enqueue("q" * (MAX_QUERY_BYTES + 1), "cicd", "low")  # type: ignore[arg-type]
    with pytest.raises(BackendError, match="between 1 and 1000"):
        await control.enqueue("q", "cicd", "low", count=10**6)  # type: ignore[arg-type]
    with pytest.raises(UnknownTask, match=_BAD_ID):
        await control.requeue(_BAD_ID)
    for delta in (-services.settings.workers - 1, 10**6):
        with pytest.raises(BackendError, match="must stay between 0 and 64"):
            await control.scale(delta)
    assert await backend.read_desired() == services.settings.workers
    assert (await services.queue.depths()).total_pending == 0


def test_a_flag_before_the_subcommand_is_kept(child_env: dict[str, str]) -> None:
    """``cortex --redis-url URL status`` uses URL, as ``status --redis-url``
    does (the subcommand's parser once reset it to the embedded default)."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    line = _error_line(run_cli("--redis-url", url, "status", env=child_env))
    assert "unreachable" in line and f"{urlsplit(url).port}" in line, line
