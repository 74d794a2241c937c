"""A small Messages API on 127.0.0.1 for tests and benchmarks, driven by the
real anthropic SDK through its base URL.

It answers ``POST /v1/messages`` either from a script (replies and errors in
order, for the executor's tests) or, when the script is empty, with a short
final answer whose usage follows the request's size. It enforces its own
per-window limits the way the API describes them: token buckets that refill
continuously, input counted as uncached input plus cache writes, output
reserved at ``max_tokens`` and adjusted when the reply is done. Every reply
carries ``anthropic-ratelimit-*`` headers; a request over a limit gets a 429
with ``retry-after``. Everything it saw is recorded for the test to check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

API_KEY = "test-key-not-secret"


@dataclass
class Step:
    """One scripted answer: a reply (``content``, ``stop_reason``, usage) or
    an error (``status`` with ``headers`` and ``body``)."""

    content: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = "end_turn"
    input_tokens: int | None = None
    output_tokens: int = 20
    cache_creation: int = 0
    cache_read: int = 0
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    """For errors, or a raw reply body that replaces the built one."""


def text_step(text: str, **kw: Any) -> Step:
    return Step(content=[{"type": "text", "text": text}], **kw)


def tool_step(name: str, arguments: dict[str, Any], tool_id: str, **kw: Any) -> Step:
    block = {"type": "tool_use", "id": tool_id, "name": name, "input": arguments}
    return Step(content=[block], stop_reason="tool_use", **kw)


def error_step(status: int, message: str, **headers: str) -> Step:
    kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return Step(status=status, body=body, headers=dict(headers))


class _Bucket:
    """Capacity ``limit``, refilled at ``limit`` per window, continuously."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.rate = limit / window
        self.level = float(limit)
        self.at = time.monotonic()

    def refill(self) -> float:
        now = time.monotonic()
        self.level = min(self.limit, self.level + (now - self.at) * self.rate)
        self.at = now
        return self.level

    def wait_for(self, need: float) -> float:
        return max(0.0, (need - self.refill()) / self.rate)

    def reset_in(self) -> float:
        return (self.limit - self.refill()) / self.rate


@dataclass
class Limits:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    tokens: int = 0
    """Input plus output together (the reference system's single budget)."""
    window: float = 60.0


class FakeAnthropic:
    """The fake API, served from a thread with its own event loop."""

    def __init__(
        self,
        *,
        limits: Limits | None = None,
        latency: tuple[float, float] = (0.0, 0.0),
        output_tokens: tuple[int, int] = (35, 68),
        min_cache_tokens: int = 0,
        send_headers: bool = True,
        seed: int = 0,
    ) -> None:
        self.limits = limits or Limits()
        self.latency = latency
        self.output_tokens = output_tokens
        self.min_cache_tokens = min_cache_tokens
        self.send_headers = send_headers
        self.script: list[Step] = []
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.limit_429s = 0
        self.counted: list[tuple[float, int, int]] = []
        """(time, counted input, output) of every answered call."""
        self._rng = random.Random(seed)
        self._cached: set[str] = set()
        self._lock = threading.Lock()
        w = self.limits.window
        self._buckets = {
            name: _Bucket(getattr(self.limits, name), w)
            for name in ("requests", "input_tokens", "output_tokens", "tokens")
            if getattr(self.limits, name) > 0
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # Lifecycle -------------------------------------------------------------

    def start(self) -> str:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start_server())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(
            target=serve, name="fake-anthropic", daemon=True
        )
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake Messages API did not start")
        return self.url

    async def _start_server(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self._loop is None or self._runner is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        with contextlib.suppress(Exception):
            fut.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()
        self._loop = None

    @contextlib.contextmanager
    def running(self) -> Iterator[FakeAnthropic]:
        self.start()
        try:
            yield self
        finally:
            self.stop()

    # The endpoint ----------------------------------------------------------

    async def _messages(self, request: web.Request) -> web.Response:
        # SDK releases differ: older ones send x-api-key, newer a bearer token.
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if API_KEY not in (request.headers.get("x-api-key"), bearer):
            return self._error(401, "authentication_error", "invalid API key")
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, "invalid_request_error", "body is not JSON")
        with self._lock:
            self.requests.append(body)
            step = self.script.pop(0) if self.script else None
        if step is not None and step.status != 200:
            self.statuses.append(step.status)
            return web.json_response(
                step.body, status=step.status, headers=step.headers
            )
        max_tokens = int(body.get("max_tokens", 0))
        uncached, creation, read = self._input_tokens(body)
        if step is not None and step.input_tokens is not None:
            uncached, creation, read = (
                step.input_tokens,
                step.cache_creation,
                step.cache_read,
            )
        counted = uncached + creation
        wait = self._admit(counted, max_tokens)
        if wait is not None:
            self.statuses.append(429)
            headers = self._headers()
            headers["retry-after"] = str(max(1, math.ceil(wait)))
            return self._error(429, "rate_limit_error", "over the limit", headers)
        lo, hi = self.latency
        if hi > 0:
            await asyncio.sleep(self._rng.uniform(lo, hi))
        if step is None:
            out = min(max_tokens, self._rng.randint(*self.output_tokens))
            step = text_step(f"[fake model] report of {out} tokens", output_tokens=out)
        out = step.output_tokens
        self._finish(max_tokens, out)
        self.counted.append((time.time(), counted, out))
        self.statuses.append(200)
        reply = step.body or {
            "id": f"msg_{len(self.requests)}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", ""),
            "content": step.content,
            "stop_reason": step.stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": uncached,
                "output_tokens": out,
                "cache_creation_input_tokens": creation,
                "cache_read_input_tokens": read,
            },
        }
        return web.json_response(reply, headers={**self._headers(), **step.headers})

    # Counting --------------------------------------------------------------

    def _input_tokens(self, body: dict[str, Any]) -> tuple[int, int, int]:
        """Uncached input, cache writes and cache reads: a token per 4 bytes
        of text, the system prompt cached when it asks to be."""
        system = body.get("system") or []
        if isinstance(system, str):
            system = [{"type": "text", "text": system}]
        sys_text = "".join(b.get("text", "") for b in system)
        sys_tokens = math.ceil(len(sys_text.encode()) / 4)
        rest = json.dumps(body.get("messages", [])) + json.dumps(body.get("tools", []))
        rest_tokens = math.ceil(len(rest.encode()) / 4)
        wants_cache = any("cache_control" in b for b in system)
        if not wants_cache or sys_tokens < self.min_cache_tokens:
            return sys_tokens + rest_tokens, 0, 0
        with self._lock:
            seen = sys_text in self._cached
            self._cached.add(sys_text)
        if seen:
            return rest_tokens, 0, sys_tokens
        return rest_tokens, sys_tokens, 0

    def _admit(self, counted: int, max_tokens: int) -> float | None:
        need = {
            "requests": 1,
            "input_tokens": counted,
            "output_tokens": max_tokens,
            "tokens": counted + max_tokens,
        }
        with self._lock:
            wait = max(
                (b.wait_for(need[n]) for n, b in self._buckets.items()), default=0.0
            )
            if wait > 0:
                self.limit_429s += 1
                return wait
            for name, bucket in self._buckets.items():
                bucket.level -= need[name]
        return None

    def _finish(self, max_tokens: int, out: int) -> None:
        with self._lock:
            for name in ("output_tokens", "tokens"):
                bucket = self._buckets.get(name)
                if bucket is not None:
                    bucket.refill()
                    bucket.level = min(bucket.limit, bucket.level + max_tokens - out)

    def _headers(self) -> dict[str, str]:
        if not self.send_headers:
            return {}
        out: dict[str, str] = {}
        names = {
            "requests": "requests",
            "input_tokens": "input-tokens",
            "output_tokens": "output-tokens",
            "tokens": "tokens",
        }
        with self._lock:
            for name, bucket in self._buckets.items():
                prefix = f"anthropic-ratelimit-{names[name]}-"
                reset = datetime.fromtimestamp(time.time() + bucket.reset_in(), UTC)
                out[prefix + "limit"] = str(bucket.limit)
                out[prefix + "remaining"] = str(max(0, math.floor(bucket.level)))
                out[prefix + "reset"] = reset.isoformat().replace("+00:00", "Z")
        return out

    def _error(
        self,
        status: int,
        kind: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        body = {"type": "error", "error": {"type": kind, "message": message}}
        return web.json_response(body, status=status, headers=headers or {})
