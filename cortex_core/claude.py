"""The Claude executor: one task is one tool-use conversation on the Messages
API, every call of it inside the shared budget.

Each model call reserves its estimate in the shared limiter (input from the
request, output from ``max_tokens``), is sent with the SDK's own retries off,
and settles with the usage the reply reports. Input counts as the API counts
it against input tokens per minute on current models: uncached input plus
cache writes; cache reads do not count. One retry layer lives here: a 429
with ``retry-after`` pauses the shared budget for every worker, overload and
server errors back off longer, and a 429 that waiting will not clear fails
the task and raises an alert. Every reply is validated before it is used.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import random
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anthropic
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cortex_core.config import Settings
from cortex_core.executor import Execution, ExecutionError
from cortex_core.limiter import RateLimiter, Reservation
from cortex_core.models import (
    MAX_OUTPUT_BYTES,
    MAX_TRANSCRIPT_ENTRIES,
    Task,
    TranscriptEntry,
    describe_validation_error,
)
from cortex_core.resultcache import ResultCache
from cortex_core.tools import Toolbox, ToolOutcome, ToolSpec

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You are cortex, an assistant that answers operators' questions about a "
    "Kubernetes cluster. Use the tools to read the cluster; they are "
    "read-only and you cannot change anything. Check what the question asks "
    "(pod status, resource usage, events, services), then answer in a short "
    "report: what is healthy, what is not, and what to look at first. Say "
    "plainly when a tool refused or failed and what you could not check."
)
#: Longest tool result sent back to the model, characters.
MAX_TOOL_RESULT_CHARS = 16_000
#: Stop reasons after which the conversation is over with an answer.
_FINAL = frozenset({"end_turn", "stop_sequence"})
#: Input-token estimate before any reply was seen: one token per this many
#: bytes of the request's JSON. English text runs near 4 bytes a token on
#: Claude's tokenizer; JSON punctuation and identifiers run shorter, so 3 errs
#: high, which only holds back budget until the settle.
_START_BYTES_PER_TOKEN = 3.0
#: The API adds a system prompt of its own when tools are sent; reserve it.
_TOOL_OVERHEAD_TOKENS = 350
#: Replies kept to calibrate the estimate, and the margin over the highest.
_CALIBRATION_SAMPLES = 64
_CALIBRATION_MARGIN = 1.1
#: A prompt cache read this recently is still warm (the API keeps an entry
#: five minutes after its last use).
_WARM_CACHE_SECONDS = 120.0
_RATE_HEADERS = {
    "requests": "requests",
    "input-tokens": "input_tokens",
    "output-tokens": "output_tokens",
    "tokens": "tokens",
}


class NoTools:
    """A toolbox with nothing in it: the model answers from the query alone."""

    def specs(self) -> Sequence[ToolSpec]:
        return ()

    async def call(self, name: str, arguments: Mapping[str, Any]) -> ToolOutcome:
        return ToolOutcome(f"no tool named {name!r}: this worker has no tools", True)


# Reply validation ------------------------------------------------------------


class _Usage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    cache_creation_input_tokens: int | None = Field(default=None, ge=0)
    cache_read_input_tokens: int | None = Field(default=None, ge=0)


class _Reply(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    role: str
    model: str = ""
    content: list[dict[str, Any]]
    stop_reason: str | None
    usage: _Usage


@dataclass(frozen=True)
class Reply:
    """One validated model reply."""

    content: list[dict[str, Any]]
    stop_reason: str
    input_tokens: int
    output_tokens: int
    cache_creation_tokens: int
    cache_read_tokens: int
    model: str

    @property
    def counted_input(self) -> int:
        """Input as the API counts it against input tokens per minute."""
        return self.input_tokens + self.cache_creation_tokens

    @property
    def text(self) -> str:
        return "\n".join(b["text"] for b in self.content if b["type"] == "text")

    @property
    def tool_uses(self) -> list[dict[str, Any]]:
        return [b for b in self.content if b["type"] == "tool_use"]


def parse_reply(body: object) -> Reply:
    """Validate a Messages API reply; raise ExecutionError saying what is wrong."""
    try:
        reply = _Reply.model_validate(body)
    except ValidationError as err:
        raise ExecutionError(
            f"malformed reply: {describe_validation_error(err)}", retryable=True
        ) from err
    if reply.type != "message" or reply.role != "assistant":
        raise ExecutionError(
            f"malformed reply: type {reply.type!r}, role {reply.role!r}",
            retryable=True,
        )
    if reply.stop_reason is None:
        raise ExecutionError("malformed reply: no stop_reason", retryable=True)
    for n, block in enumerate(reply.content):
        kind = block.get("type")
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise ExecutionError(
                    f"malformed reply: content[{n}] text is not a string",
                    retryable=True,
                )
        elif kind == "tool_use":
            if not (
                isinstance(block.get("id"), str)
                and block["id"]
                and isinstance(block.get("name"), str)
                and isinstance(block.get("input"), dict)
            ):
                raise ExecutionError(
                    f"malformed reply: content[{n}] tool_use needs id, name and "
                    "an object input",
                    retryable=True,
                )
        elif kind not in ("thinking", "redacted_thinking"):
            raise ExecutionError(
                f"malformed reply: content[{n}] has unexpected type {kind!r}",
                retryable=True,
            )
    u = reply.usage
    return Reply(
        content=reply.content,
        stop_reason=reply.stop_reason,
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        cache_creation_tokens=u.cache_creation_input_tokens or 0,
        cache_read_tokens=u.cache_read_input_tokens or 0,
        model=reply.model,
    )


# Rate-limit headers ----------------------------------------------------------


@dataclass(frozen=True)
class RateReport:
    """One dimension of the ``anthropic-ratelimit-*`` headers."""

    dimension: str
    limit: int | None
    remaining: int
    reset_in: float
    """Seconds until the dimension is whole again."""


def parse_retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """``retry-after`` in seconds (a number or an HTTP date), or None."""
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def parse_rate_headers(headers: Mapping[str, str], now: float) -> list[RateReport]:
    """The dimensions the headers report; malformed ones are left out."""
    out: list[RateReport] = []
    for name, dimension in _RATE_HEADERS.items():
        prefix = f"anthropic-ratelimit-{name}-"
        remaining_raw = headers.get(prefix + "remaining")
        reset_raw = headers.get(prefix + "reset")
        if remaining_raw is None or reset_raw is None:
            continue
        try:
            remaining = int(remaining_raw)
            reset = datetime.fromisoformat(reset_raw.replace("Z", "+00:00"))
            limit_raw = headers.get(prefix + "limit")
            limit = int(limit_raw) if limit_raw is not None else None
        except ValueError:
            logger.warning("claude: ignoring malformed %s* headers", prefix)
            continue
        out.append(
            RateReport(dimension, limit, max(0, remaining), reset.timestamp() - now)
        )
    return out


# Configuration and the estimate ---------------------------------------------


@dataclass(frozen=True)
class ClaudeConfig:
    api_key: str = field(repr=False)
    base_url: str | None = None
    model: str = "claude-sonnet-4-5"
    max_tokens: int = 1024
    max_rounds: int = 8
    task_token_cap: int = 60_000
    timeout: float = 120.0
    max_attempts: int = 6
    fallback_model: str | None = None
    cheap_model: str | None = None
    cheap_for: frozenset[str] = frozenset()
    result_cache_seconds: float = 0.0
    system_prompt: str = SYSTEM_PROMPT
    backoff_base: float = 1.0
    """First backoff after a connection error; overload and 5xx use 4x."""
    backoff_cap: float = 60.0

    @classmethod
    def from_settings(cls, s: Settings) -> ClaudeConfig:
        if not s.anthropic_api_key:
            raise ValueError("the claude executor needs an API key")
        return cls(
            api_key=s.anthropic_api_key,
            base_url=s.anthropic_base_url,
            model=s.model,
            max_tokens=s.max_tokens,
            max_rounds=s.max_tool_rounds,
            task_token_cap=s.task_token_cap,
            timeout=s.api_timeout_seconds,
            max_attempts=s.api_max_attempts,
            fallback_model=s.fallback_model,
            cheap_model=s.cheap_model,
            cheap_for=s.cheap_for_set,
            result_cache_seconds=s.result_cache_seconds,
        )


class InputEstimator:
    """Input tokens of a request before it is sent, from its size in bytes.

    It starts at one token per 3 bytes and then follows the replies: the
    highest tokens-per-byte seen in the last 64 calls, plus 10%. A reply that
    reports more than was reserved is settled at its real size, and raises
    the rate for the calls after it. The cached prefix (the system prompt and
    tools) is left out of the estimate while the cache is known to be warm:
    cache reads do not count against input tokens per minute.
    """

    def __init__(self) -> None:
        self._ratios: deque[float] = deque(maxlen=_CALIBRATION_SAMPLES)
        self._prefix: dict[str, tuple[int, float]] = {}
        """Model to the cached prefix's tokens and when a reply last showed it."""

    def rate(self) -> float:
        """Tokens per byte: the highest seen lately (before the margin)."""
        if len(self._ratios) < 4:
            return 1 / _START_BYTES_PER_TOKEN
        return max(self._ratios)

    def estimate(self, body: Mapping[str, Any]) -> tuple[int, int]:
        """Estimated counted input tokens and the request's size in bytes."""
        size = len(json.dumps(body, separators=(",", ":")).encode("utf-8"))
        tokens = size * self.rate()
        if body.get("tools"):
            tokens += _TOOL_OVERHEAD_TOKENS
        prefix, seen = self._prefix.get(str(body.get("model", "")), (0, 0.0))
        if prefix and time.monotonic() - seen < _WARM_CACHE_SECONDS:
            tokens = max(0.0, tokens - prefix)
        # The margin goes on what is counted, after the cached prefix is out.
        return math.ceil(tokens * _CALIBRATION_MARGIN) + 8, size

    def observe(self, size: int, reply: Reply, model: str, *, had_tools: bool) -> None:
        total = reply.input_tokens + reply.cache_creation_tokens
        total += reply.cache_read_tokens
        if had_tools:
            total = max(0, total - _TOOL_OVERHEAD_TOKENS)
        if size > 0:
            self._ratios.append(total / size)
        prefix = reply.cache_read_tokens or reply.cache_creation_tokens
        if prefix:
            self._prefix[model] = (prefix, time.monotonic())
        else:
            self._prefix.pop(model, None)


# The executor ----------------------------------------------------------------


@dataclass
class _Conversation:
    task: Task
    model: str
    messages: list[dict[str, Any]]
    transcript: list[TranscriptEntry] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation: int = 0
    cache_read: int = 0
    calls: int = 0
    waited: float = 0.0
    attempt: int = 0
    """Tries of the current call so far."""

    @property
    def spent(self) -> int:
        return self.input_tokens + self.cache_creation + self.output_tokens

    def note(self, entry: TranscriptEntry) -> None:
        if len(self.transcript) < MAX_TRANSCRIPT_ENTRIES - 1:
            self.transcript.append(entry)
        elif len(self.transcript) == MAX_TRANSCRIPT_ENTRIES - 1:
            self.transcript.append(
                TranscriptEntry.cut("note", "transcript cut: too many steps")
            )


class _Retry(Exception):
    """One call failed in a way another try may fix, after ``delay`` seconds."""

    def __init__(self, reason: str, delay: float) -> None:
        super().__init__(reason)
        self.delay = delay


class ClaudeExecutor:
    """Runs a task as a Claude tool-use conversation."""

    simulated = False
    manages_budget = True

    def __init__(
        self,
        config: ClaudeConfig,
        limiter: RateLimiter,
        toolbox: Toolbox,
        *,
        cache: ResultCache | None = None,
        client: anthropic.AsyncAnthropic | None = None,
    ) -> None:
        self.config = config
        self.model = config.model
        self.limiter = limiter
        self.toolbox = toolbox
        self.cache = cache
        self.client = client or anthropic.AsyncAnthropic(
            api_key=config.api_key,
            base_url=config.base_url,
            max_retries=0,
            timeout=config.timeout,
        )
        self.waiting: dict[str, float] = {}
        self.estimator = InputEstimator()
        self._rng = random.Random()

    def estimate(self, task: Task) -> tuple[int, int]:
        """The first call's estimate (each call reserves its own)."""
        conv = self._start(task)
        tokens, _ = self.estimator.estimate(self._body(conv))
        return tokens, self.config.max_tokens

    def model_for(self, task: Task) -> str:
        cheap = self.config.cheap_for
        if self.config.cheap_model and (
            str(task.priority) in cheap or task.category in cheap
        ):
            return self.config.cheap_model
        return self.config.model

    async def close(self) -> None:
        await self.client.close()

    # One task ---------------------------------------------------------------

    async def run(self, task: Task) -> Execution:
        specs = list(self.toolbox.specs())
        fingerprint = ""
        if self.cache is not None:
            fingerprint = self.cache.fingerprint(
                task, self.model_for(task), [s.name for s in specs]
            )
            hit = await self.cache.get(fingerprint)
            if hit is not None:
                logger.info("task %s: answered from the result cache", task.id)
                return hit
        conv = self._start(task)
        conv.note(TranscriptEntry.cut("user", conv.messages[0]["content"]))
        stop = "max_tool_rounds"
        final_text = ""
        for _ in range(self.config.max_rounds):
            body = self._body(conv, specs)
            estimate, _ = self.estimator.estimate(body)
            if (
                conv.spent + estimate + self.config.max_tokens
                > self.config.task_token_cap
            ):
                stop = "token_cap"
                break
            reply = await self._call(conv, body)
            conv.messages.append({"role": "assistant", "content": reply.content})
            if reply.text:
                final_text = reply.text
                conv.note(TranscriptEntry.cut("assistant", reply.text))
            if reply.stop_reason in _FINAL:
                stop = reply.stop_reason
                break
            if reply.stop_reason == "tool_use":
                if not reply.tool_uses:
                    raise ExecutionError(
                        "malformed reply: stop_reason tool_use without a tool_use "
                        "block",
                        retryable=True,
                    )
                conv.messages.append(
                    {"role": "user", "content": await self._run_tools(conv, reply)}
                )
                continue
            if reply.stop_reason == "pause_turn":
                continue
            if reply.stop_reason == "max_tokens":
                stop = "max_tokens"
                break
            if reply.stop_reason == "refusal":
                raise ExecutionError("the model refused the task", retryable=False)
            raise ExecutionError(
                f"the model stopped with {reply.stop_reason!r}", retryable=False
            )
        output = self._output(stop, final_text, conv)
        execution = Execution(
            output=output,
            input_tokens=conv.input_tokens,
            output_tokens=conv.output_tokens,
            model=conv.model,
            simulated=False,
            cache_creation_tokens=conv.cache_creation,
            cache_read_tokens=conv.cache_read,
            calls=conv.calls,
            stop_reason=stop,
            waited_seconds=conv.waited,
            transcript=tuple(conv.transcript),
        )
        if self.cache is not None and stop in _FINAL:
            await self.cache.put(fingerprint, execution)
        return execution

    def _start(self, task: Task) -> _Conversation:
        text = f"Category: {task.category}\nPriority: {task.priority}\n\n{task.query}"
        return _Conversation(
            task=task,
            model=self.model_for(task),
            messages=[{"role": "user", "content": text}],
        )

    def _body(
        self, conv: _Conversation, specs: Sequence[ToolSpec] = ()
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": conv.model,
            "max_tokens": self.config.max_tokens,
            "system": [
                {
                    "type": "text",
                    "text": self.config.system_prompt,
                    "cache_control": {"type": "ephemeral"},
                }
            ],
            "messages": conv.messages,
        }
        if specs:
            body["tools"] = [s.to_api() for s in specs]
        return body

    def _output(self, stop: str, text: str, conv: _Conversation) -> str:
        notes = {
            "max_tool_rounds": f"[stopped after {conv.calls} model calls, the "
            f"most one task may make (max_tool_rounds)]",
            "token_cap": f"[stopped at {conv.spent} tokens: the next call could "
            f"pass the task's cap of {self.config.task_token_cap}]",
            "max_tokens": f"[the reply was cut at {self.config.max_tokens} "
            f"output tokens (max_tokens)]",
        }
        if stop in notes:
            conv.note(TranscriptEntry.cut("note", notes[stop]))
            text = f"{notes[stop]}\n{text}" if text else notes[stop]
        data = text.encode("utf-8")
        if len(data) > MAX_OUTPUT_BYTES:
            text = data[: MAX_OUTPUT_BYTES - 64].decode("utf-8", "ignore")
            text += "\n[output cut]"
        return text

    async def _run_tools(
        self, conv: _Conversation, reply: Reply
    ) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for use in reply.tool_uses:
            name, args = use["name"], use["input"]
            conv.note(
                TranscriptEntry.cut(
                    "tool_call", json.dumps(args, sort_keys=True), tool=name[:128]
                )
            )
            try:
                outcome = await self.toolbox.call(name, args)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                # A toolbox should answer errors as outcomes; one that raises
                # still gives the model something to read.
                logger.exception("task %s: tool %s raised", conv.task.id, name)
                outcome = ToolOutcome(f"the tool failed: {type(err).__name__}", True)
            content = outcome.content
            if len(content) > MAX_TOOL_RESULT_CHARS:
                content = content[:MAX_TOOL_RESULT_CHARS] + "\n[result cut]"
            conv.note(
                TranscriptEntry.cut(
                    "tool_result", content, tool=name[:128], is_error=outcome.is_error
                )
            )
            block: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": use["id"],
                "content": content,
            }
            if outcome.is_error:
                block["is_error"] = True
            results.append(block)
        return results

    # One model call, with the retry layer -----------------------------------

    async def _call(self, conv: _Conversation, body: dict[str, Any]) -> Reply:
        tid = conv.task.id
        last = ""
        for attempt in range(1, self.config.max_attempts + 1):
            conv.attempt = attempt
            body["model"] = conv.model
            estimate, size = self.estimator.estimate(body)
            started = time.monotonic()
            reservation = await self.limiter.reserve(
                estimate,
                self.config.max_tokens,
                who=f"task {tid}",
                priority=str(conv.task.priority),
                on_wait=lambda until: self._note_wait(tid, until),
            )
            conv.waited += reservation.waited_seconds
            try:
                reply = await self._send(conv, body, reservation)
            except _Retry as retry:
                last = str(retry)
                if attempt == self.config.max_attempts:
                    break
                logger.warning(
                    "task %s: call %d failed (%s); next try in %.1fs",
                    tid,
                    attempt,
                    last,
                    retry.delay,
                )
                self._note_wait(tid, self.limiter.server_now() + retry.delay)
                await asyncio.sleep(retry.delay)
                self._note_wait(tid, None)
                conv.waited += retry.delay
                continue
            finally:
                logger.debug(
                    "task %s: call took %.2fs", tid, time.monotonic() - started
                )
            self.estimator.observe(
                size, reply, conv.model, had_tools=bool(body.get("tools"))
            )
            conv.calls += 1
            conv.input_tokens += reply.input_tokens
            conv.output_tokens += reply.output_tokens
            conv.cache_creation += reply.cache_creation_tokens
            conv.cache_read += reply.cache_read_tokens
            return reply
        raise ExecutionError(
            f"gave up after {self.config.max_attempts} tries: {last}", retryable=True
        )

    def _note_wait(self, task_id: str, until: float | None) -> None:
        if until is None:
            self.waiting.pop(task_id, None)
        else:
            self.waiting[task_id] = until

    async def _send(
        self, conv: _Conversation, body: dict[str, Any], reservation: Reservation
    ) -> Reply:
        """One HTTP call; settles or releases the reservation either way."""
        try:
            raw = await self.client.messages.with_raw_response.create(**body)
        except anthropic.APIStatusError as err:
            await self.limiter.release(reservation)
            await self._observe_headers(err.response.headers)
            raise await self._status_error(conv, err) from err
        except (anthropic.APITimeoutError, anthropic.APIConnectionError) as err:
            # The request may have reached the API and been counted: keep the
            # estimate in the window rather than give it back.
            await self.limiter.settle(
                reservation, reservation.input_tokens, reservation.output_tokens
            )
            delay = self._backoff(conv.attempt, self.config.backoff_base)
            raise _Retry(f"connection: {type(err).__name__}", delay) from err
        try:
            reply = parse_reply(json.loads(raw.http_response.content))
        except (ValueError, ExecutionError) as err:
            # Counted by the API all the same: keep the estimate in the window.
            await self.limiter.settle(
                reservation, reservation.input_tokens, reservation.output_tokens
            )
            await self._observe_headers(raw.headers)
            why = str(err).removeprefix("malformed reply: ")
            if not isinstance(err, ExecutionError):
                why = "not JSON"
            delay = self._backoff(conv.attempt, self.config.backoff_base)
            raise _Retry(f"malformed reply: {why}", delay) from err
        await self.limiter.settle(reservation, reply.counted_input, reply.output_tokens)
        # After the settle: the API's remaining figures include this call.
        await self._observe_headers(raw.headers)
        return reply

    async def _status_error(
        self, conv: _Conversation, err: anthropic.APIStatusError
    ) -> Exception:
        status = err.status_code
        tid = conv.task.id
        message = _api_message(err)
        if status == 429:
            wait = parse_retry_after(err.response.headers, time.time())
            spend = "spend" in message.lower() or "credit" in message.lower()
            if wait is None or spend:
                why = "a spend limit" if spend else "a 429 without retry-after"
                alert = f"Claude API: {why} ({message}); tasks fail until it clears"
                await self.limiter.alert(alert)
                logger.error("task %s: %s", tid, alert)
                return ExecutionError(f"rate limit: {why}: {message}", retryable=False)
            until = await self.limiter.pause_for(wait)
            logger.warning(
                "task %s: 429, retry-after %.0fs: every worker paused until %s",
                tid,
                wait,
                time.strftime("%H:%M:%S", time.localtime(until)),
            )
            self._note_wait(tid, until)
            conv.note(
                TranscriptEntry.cut("note", f"429: all workers paused {wait:.0f}s")
            )
            return _Retry(f"429, paused {wait:.0f}s", 0.0)
        if status == 529 or status >= 500:
            fallback = self.config.fallback_model
            if status == 529 and fallback is not None and fallback != conv.model:
                logger.warning(
                    "task %s: %s overloaded; switching to %s",
                    tid,
                    conv.model,
                    fallback,
                )
                conv.note(
                    TranscriptEntry.cut(
                        "note", f"{conv.model} overloaded: now on {fallback}"
                    )
                )
                conv.model = fallback
                return _Retry(f"{status}, switched model", 0.0)
            delay = self._backoff(conv.attempt, self.config.backoff_base * 4)
            what = "overloaded" if status == 529 else "server error"
            return _Retry(f"{status} {what}", delay)
        if status in (408, 409):
            return _Retry(
                str(status), self._backoff(conv.attempt, self.config.backoff_base)
            )
        if status in (401, 403):
            await self.limiter.alert(f"Claude API rejected the key: {status} {message}")
        return ExecutionError(f"API error {status}: {message}", retryable=False)

    async def _observe_headers(self, headers: Mapping[str, str]) -> None:
        now = time.time()
        for report in parse_rate_headers(headers, now):
            if report.limit is not None:
                await self.limiter.learn_limit(report.dimension, report.limit)
            if report.reset_in <= 0:
                continue
            held = await self.limiter.tighten(
                report.dimension, report.remaining, report.reset_in
            )
            if held:
                logger.info(
                    "claude: API reports %d %s left; holding %d until reset",
                    report.remaining,
                    report.dimension,
                    held,
                )

    def _backoff(self, attempt: int, base: float) -> float:
        """Jittered: between half and all of a ceiling that doubles per try."""
        ceiling = min(self.config.backoff_cap, base * 2 ** min(attempt - 1, 10))
        return self._rng.uniform(ceiling / 2, ceiling)


def _api_message(err: anthropic.APIStatusError) -> str:
    body = err.body
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])[:300]
    return str(err.message)[:300]


__all__ = [
    "ClaudeConfig",
    "ClaudeExecutor",
    "InputEstimator",
    "NoTools",
    "Reply",
    "ResultCache",
    "parse_rate_headers",
    "parse_reply",
    "parse_retry_after",
]
