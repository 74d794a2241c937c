"""The Claude executor, driven through the real anthropic SDK against the fake
Messages API on 127.0.0.1, with the shared budget in the test's Redis."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from cortex_core.claude import (
    ClaudeConfig,
    ClaudeExecutor,
    NoTools,
    ResultCache,
    parse_rate_headers,
    parse_retry_after,
)
from cortex_core.executor import ExecutionError
from cortex_core.limiter import Limits, RateLimiter
from cortex_core.models import Priority, TaskState
from cortex_core.system import Services
from cortex_core.tools import ToolOutcome, ToolSpec
from tests.fakes.anthropic_api import (
    API_KEY,
    FakeAnthropic,
    error_step,
    text_step,
    tool_step,
)
from tests.helpers import make_task, make_worker, running, wait_for


class PodsToolbox:
    """One tool that answers a fixed pod list and records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def specs(self) -> Sequence[ToolSpec]:
        schema = {
            "type": "object",
            "properties": {"namespace": {"type": "string"}},
            "required": ["namespace"],
        }
        return [ToolSpec("list_pods", "Pods of a namespace.", schema)]

    async def call(self, name: str, arguments: Mapping[str, Any]) -> ToolOutcome:
        self.calls.append((name, dict(arguments)))
        if name != "list_pods":
            return ToolOutcome(f"unknown tool {name!r}", True)
        return ToolOutcome(json.dumps({"pods": ["web-1 Running", "db-0 Pending"]}))


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic().running() as api:
        yield api


def executor_for(
    services: Services,
    fake: FakeAnthropic,
    toolbox: Any = None,
    *,
    limiter: RateLimiter | None = None,
    cache: ResultCache | None = None,
    **config: Any,
) -> ClaudeExecutor:
    cfg = ClaudeConfig(
        api_key=API_KEY,
        base_url=fake.url,
        backoff_base=0.01,
        backoff_cap=0.05,
        timeout=10.0,
        **config,
    )
    return ClaudeExecutor(
        cfg, limiter or services.limiter, toolbox or NoTools(), cache=cache
    )


async def test_tool_use_conversation_reaches_the_model_and_counts_every_round(
    services: Services, fake: FakeAnthropic
) -> None:
    """A tool call runs, its result goes back to the model, and the tokens of
    both rounds are counted as the API reports them."""
    fake.script = [
        tool_step(
            "list_pods",
            {"namespace": "web"},
            "toolu_1",
            input_tokens=300,
            output_tokens=40,
            cache_creation=150,
        ),
        text_step(
            "db-0 is Pending.", input_tokens=420, output_tokens=25, cache_read=150
        ),
    ]
    tools = PodsToolbox()
    executor = executor_for(services, fake, tools)
    try:
        execution = await executor.run(make_task("security"))
    finally:
        await executor.close()
    assert tools.calls == [("list_pods", {"namespace": "web"})]
    assert execution.output == "db-0 is Pending."
    assert execution.calls == 2
    assert (execution.input_tokens, execution.output_tokens) == (720, 65)
    assert execution.cache_creation_tokens == 150
    assert execution.cache_read_tokens == 150
    # The second request carried the tool's result to the model.
    second = fake.requests[1]["messages"]
    assert second[1]["content"][0]["type"] == "tool_use"
    result = second[2]["content"][0]
    assert result["type"] == "tool_result"
    assert result["tool_use_id"] == "toolu_1"
    assert "db-0 Pending" in result["content"]
    # The system prompt asks to be cached, and the tools are offered.
    first = fake.requests[0]
    assert first["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert [t["name"] for t in first["tools"]] == ["list_pods"]
    # The window holds what the API counts against input tokens per minute:
    # uncached input plus cache writes, not cache reads.
    usage = await services.limiter.usage()
    assert usage.requests == 2
    assert usage.input_tokens == 300 + 150 + 420
    assert usage.output_tokens == 65
    kinds = [e.kind for e in execution.transcript]
    assert kinds == ["user", "tool_call", "tool_result", "assistant"]
    assert json.loads(execution.transcript[1].text) == {"namespace": "web"}


async def test_max_tool_rounds_stops_the_conversation(
    services: Services, fake: FakeAnthropic
) -> None:
    fake.script = [
        tool_step("list_pods", {"namespace": "web"}, f"toolu_{n}") for n in range(5)
    ]
    executor = executor_for(services, fake, PodsToolbox(), max_rounds=3)
    try:
        execution = await executor.run(make_task())
    finally:
        await executor.close()
    assert len(fake.requests) == 3
    assert execution.stop_reason == "max_tool_rounds"
    assert "max_tool_rounds" in execution.output


async def test_task_token_cap_stops_before_the_call_that_could_pass_it(
    services: Services, fake: FakeAnthropic
) -> None:
    fake.script = [
        tool_step(
            "list_pods",
            {"namespace": "web"},
            "toolu_1",
            input_tokens=900,
            output_tokens=90,
        ),
        text_step("never sent"),
    ]
    executor = executor_for(
        services, fake, PodsToolbox(), max_tokens=100, task_token_cap=1200
    )
    try:
        execution = await executor.run(make_task())
    finally:
        await executor.close()
    assert len(fake.requests) == 1
    assert execution.stop_reason == "token_cap"
    assert "1200" in execution.output


async def test_429_with_long_retry_after_pauses_every_worker(
    services: Services, fake: FakeAnthropic
) -> None:
    """A retry-after of two minutes (past the SDK's own 60 s ceiling) holds
    the shared budget for every worker, and the task shows its next attempt."""
    fake.script = [error_step(429, "slow down", **{"retry-after": "120"})]
    executor = executor_for(services, fake)
    task = make_task()
    job = asyncio.create_task(executor.run(task))
    try:
        until = await wait_for(services.limiter.paused_until, "the shared pause")
        assert 110 < until - services.limiter.server_now() <= 120
        # Another worker's limiter on the same Redis must wait as long.
        other = RateLimiter(services.client, services.keys, Limits(tokens=40_000))
        reservation, wait = await other.try_reserve(10, 10)
        assert reservation is None
        assert wait > 100
        next_attempt = await wait_for(
            lambda: executor.waiting.get(task.id), "the next attempt time"
        )
        assert abs(next_attempt - until) < 5
        assert len(fake.requests) == 1
    finally:
        job.cancel()
        done, _ = await asyncio.wait({job}, timeout=10)
        await executor.close()
    assert done and job.cancelled(), "the cancelled task went on waiting"


async def test_429_with_short_retry_after_is_retried_after_the_pause(
    services: Services, fake: FakeAnthropic
) -> None:
    fake.script = [
        error_step(429, "slow down", **{"retry-after": "1"}),
        text_step("fine"),
    ]
    executor = executor_for(services, fake)
    started = services.limiter.server_now()
    try:
        execution = await executor.run(make_task())
    finally:
        await executor.close()
    assert execution.output == "fine"
    assert len(fake.requests) == 2
    assert execution.waited_seconds > 0
    # The second request went only once the pause had ended.
    paused = await services.limiter.paused_until()
    assert paused is None
    assert services.limiter.server_now() - started >= 0.9


async def test_429_without_retry_after_fails_the_task_and_raises_an_alert(
    services: Services, fake: FakeAnthropic
) -> None:
    fake.script = [error_step(429, "your organisation is over its spend limit")]
    executor = executor_for(services, fake)
    try:
        with pytest.raises(ExecutionError) as info:
            await executor.run(make_task())
    finally:
        await executor.close()
    assert not info.value.retryable
    assert "rate limit" in str(info.value)
    assert len(fake.requests) == 1
    alerts = await services.limiter.alerts()
    assert len(alerts) == 1
    assert "spend limit" in alerts[0].message


async def test_worker_dead_letters_a_task_whose_429_will_not_clear(
    services: Services, fake: FakeAnthropic
) -> None:
    fake.script = [error_step(429, "no retry-after here")]
    executor = executor_for(services, fake)
    task = make_task(max_attempts=3)
    await services.queue.enqueue(task)
    async with running(make_worker(services, executor)):
        await wait_for(services.queue.dead_ids, "the dead letter")
    await executor.close()
    record = await services.queue.get(task.id)
    assert record.state == TaskState.DEAD
    assert "429 without retry-after" in record.reason
    assert len(fake.requests) == 1


@pytest.mark.parametrize("status", [500, 529])
async def test_overload_and_server_errors_are_retried(
    services: Services, fake: FakeAnthropic, status: int
) -> None:
    fake.script = [error_step(status, "busy"), error_step(status, "busy")]
    executor = executor_for(services, fake)
    try:
        execution = await executor.run(make_task())
    finally:
        await executor.close()
    assert len(fake.requests) == 3
    assert execution.output.startswith("[fake model]")
    # A failed call gives its reservation back: only the answered one counts.
    assert (await services.limiter.usage()).requests == 1


async def test_server_errors_past_the_last_attempt_fail_retryably(
    services: Services, fake: FakeAnthropic
) -> None:
    fake.script = [error_step(503, "down")] * 3
    executor = executor_for(services, fake, max_attempts=3)
    try:
        with pytest.raises(ExecutionError) as info:
            await executor.run(make_task())
    finally:
        await executor.close()
    assert info.value.retryable
    assert "3 tries" in str(info.value)


async def test_overload_switches_to_the_fallback_model(
    services: Services, fake: FakeAnthropic
) -> None:
    fake.script = [error_step(529, "overloaded")]
    executor = executor_for(
        services, fake, model="big-model", fallback_model="small-model"
    )
    try:
        execution = await executor.run(make_task())
    finally:
        await executor.close()
    assert [r["model"] for r in fake.requests] == ["big-model", "small-model"]
    assert execution.model == "small-model"


async def test_cheap_model_for_chosen_priorities_and_categories(
    services: Services, fake: FakeAnthropic
) -> None:
    executor = executor_for(
        services,
        fake,
        model="big-model",
        cheap_model="small-model",
        cheap_for=frozenset({"low", "inventory"}),
    )
    try:
        await executor.run(make_task("security", Priority.LOW))
        await executor.run(make_task("inventory", Priority.CRITICAL))
        await executor.run(make_task("security", Priority.CRITICAL))
    finally:
        await executor.close()
    assert [r["model"] for r in fake.requests] == [
        "small-model",
        "small-model",
        "big-model",
    ]


async def test_rate_limit_headers_tighten_the_shared_budget(
    services: Services, fake: FakeAnthropic
) -> None:
    """The API says only 100 input tokens are left for 30 s: the window holds
    back the rest, and the reported limit replaces the configured one."""
    reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 30))
    headers = {
        "anthropic-ratelimit-input-tokens-limit": "20000",
        "anthropic-ratelimit-input-tokens-remaining": "100",
        "anthropic-ratelimit-input-tokens-reset": reset,
    }
    step = text_step("ok", input_tokens=50, output_tokens=10)
    step.headers = headers
    fake.script = [step]
    executor = executor_for(services, fake)
    try:
        await executor.run(make_task())
    finally:
        await executor.close()
    assert await services.limiter.learned_limits() == {"input_tokens": 20_000}
    usage = await services.limiter.usage()
    # 50 settled plus what is held: 20,000 - 50 - 100.
    assert usage.input_tokens == 20_000 - 100
    reservation, wait = await services.limiter.try_reserve(500, 10)
    assert reservation is None
    assert 20 < wait <= 31


async def test_result_cache_answers_the_same_query_without_a_call(
    services: Services, fake: FakeAnthropic
) -> None:
    cache = ResultCache(services.client, services.keys, ttl=60)
    executor = executor_for(services, fake, cache=cache)
    first, second = make_task("cicd"), make_task("cicd")
    other = make_task("security")
    try:
        one = await executor.run(first)
        two = await executor.run(second)
        await executor.run(other)
    finally:
        await executor.close()
    assert len(fake.requests) == 2
    assert two.cached and not one.cached
    assert two.output == one.output
    assert (two.input_tokens, two.output_tokens, two.calls) == (0, 0, 0)
    assert await cache.stats() == (1, 2)


async def test_malformed_reply_is_retried_not_trusted(
    services: Services, fake: FakeAnthropic
) -> None:
    bad = text_step("x")
    bad.body = {"type": "message", "role": "assistant", "content": "not a list"}
    fake.script = [bad]
    executor = executor_for(services, fake)
    try:
        execution = await executor.run(make_task())
    finally:
        await executor.close()
    assert len(fake.requests) == 2
    assert execution.output.startswith("[fake model]")


def test_retry_after_and_rate_headers_parse() -> None:
    now = 1_000_000.0
    assert parse_retry_after({"retry-after": "90"}, now) == 90.0
    assert parse_retry_after({"retry-after": "soon"}, now) is None
    assert parse_retry_after({}, now) is None
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now + 200))
    assert parse_retry_after({"retry-after": date}, now) == pytest.approx(200, abs=1)
    reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 12))
    reports = parse_rate_headers(
        {
            "anthropic-ratelimit-output-tokens-limit": "8000",
            "anthropic-ratelimit-output-tokens-remaining": "7000",
            "anthropic-ratelimit-output-tokens-reset": reset,
            "anthropic-ratelimit-requests-remaining": "many",
            "anthropic-ratelimit-requests-reset": reset,
        },
        now,
    )
    assert len(reports) == 1
    assert reports[0].dimension == "output_tokens"
    assert (reports[0].limit, reports[0].remaining) == (8000, 7000)
    assert reports[0].reset_in == pytest.approx(12, abs=1)
