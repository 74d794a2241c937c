"""The console's view of the model API: the API screen, the input and output
lines of the token graph, and a task's conversation as text."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC

from textual.widgets import Static

from cortex_core.apistatus import ApiStatus, RateLimitedTask
from cortex_core.limiter import Alert, PriorityStats
from cortex_core.models import TaskResult, TranscriptEntry
from cortex_tui.app import CortexApp
from cortex_tui.conversation import conversation_block, usage_block
from cortex_tui.screens.api import ApiScreen
from cortex_tui.screens.detail import render_detail
from cortex_tui.widgets.tokens import TokenGraph

from .conftest import NEVER
from .fixtures import DETAIL, NOW, SNAPSHOT, TOKENS, FixedControl, settle

STATUS = ApiStatus(
    alerts=(Alert(NOW - 30, "Claude API: a 429 without retry-after (spend limit)"),),
    paused_until=NOW + 95,
    learned_limits={"input_tokens": 30_000},
    priorities={
        "critical": PriorityStats(calls=12, tokens=4_100, waits=0),
        "low": PriorityStats(calls=40, tokens=9_900, waits=7, waited_seconds=61.5),
    },
    held_share=0.2,
    cache_hits=3,
    cache_misses=9,
    rate_limited=(RateLimitedTask("0196a1b2c3d4e5f6a7b8c9d7", "worker-1", NOW + 95),),
)


def _app(**changes: object) -> CortexApp:
    snapshot = replace(SNAPSHOT, **changes)  # type: ignore[arg-type]
    return CortexApp(FixedControl(snapshot), refresh_seconds=NEVER, tz=UTC)


async def test_api_screen_shows_alerts_waits_and_priorities() -> None:
    app = _app(api=STATUS)
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        await pilot.press("a")  # open the API screen
        await settle(pilot)
        assert isinstance(app.screen, ApiScreen)
        text = str(app.screen.query_one("#api-body", Static).render())
        assert "11:59:30  Claude API: a 429 without retry-after" in text
        assert "every worker paused until 12:01:35" in text
        assert "a7b8c9d7  rate-limited on worker-1, next attempt 12:01:35" in text
        assert "(in 95s)" in text
        assert "low             40     9,900       7     61.5s" in text
        assert "20% of each limit is held for critical and high" in text
        assert "API reports input tokens: 30,000" in text
        assert "result cache: 3 hits of 12" in text
        await pilot.press("escape")  # back to the dashboard
        assert not isinstance(app.screen, ApiScreen)


async def test_api_screen_without_status_says_so() -> None:
    app = _app(api=None)
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        await pilot.press("a")  # open the API screen
        await settle(pilot)
        text = str(app.screen.query_one("#api-body", Static).render())
        assert "no API status" in text


async def test_token_graph_titles_input_and_output_against_their_limits() -> None:
    n = len(TOKENS.tokens_per_minute)
    tokens = replace(
        TOKENS,
        input_per_minute=[v * 3 // 4 for v in TOKENS.tokens_per_minute],
        output_per_minute=[v - v * 3 // 4 for v in TOKENS.tokens_per_minute],
        input_limit=30_000,
        output_limit=8_000,
    )
    assert len(tokens.input_per_minute) == n
    app = _app(tokens=tokens)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        title = str(app.screen.query_one(TokenGraph).border_title)
        assert "in 15,750 of 30,000" in title
        assert "out 5,250 of 8,000" in title


def test_conversation_and_usage_blocks() -> None:
    result = TaskResult(
        task_id="0196a1b2c3d4e5f6a7b8c9d4",
        ok=True,
        output="db-0 is Pending",
        model="claude-sonnet-4-5",
        simulated=False,
        input_tokens=720,
        output_tokens=65,
        cache_creation_tokens=150,
        cache_read_tokens=150,
        calls=2,
        attempt=1,
        started_at=NOW - 4,
        finished_at=NOW,
        stop_reason="end_turn",
        transcript=[
            TranscriptEntry(kind="user", text="Check pods in shop"),
            TranscriptEntry(
                kind="tool_call", tool="list_pods", text='{"namespace": "shop"}'
            ),
            TranscriptEntry(
                kind="tool_result",
                tool="list_pods",
                text="\n".join(f"pod-{n}" for n in range(10)),
            ),
            TranscriptEntry(
                kind="tool_result", tool="list_pods", text="refused", is_error=True
            ),
            TranscriptEntry(kind="assistant", text="db-0 is Pending"),
        ],
    )
    convo = conversation_block(result)
    assert convo is not None
    lines = str(convo).splitlines()
    assert lines[0] == "task   Check pods in shop"
    assert lines[1] == 'call   list_pods {"namespace": "shop"}'
    assert lines[2] == "result list_pods pod-0"
    assert "[6 more lines]" in lines[6]
    assert lines[-1] == "model  db-0 is Pending"
    usage = str(usage_block(result))
    assert "cache writes      150" in usage
    assert "model calls       2" in usage
    assert "took              4.0s" in usage
    assert conversation_block(replace_transcript(result)) is None


def test_detail_shows_model_usage_and_conversation_of_a_claude_result() -> None:
    result = TaskResult(
        task_id=DETAIL.row.task_id,
        ok=True,
        output="db-0 is Pending",
        model="claude-sonnet-4-5",
        simulated=False,
        input_tokens=720,
        output_tokens=65,
        cache_read_tokens=150,
        calls=2,
        attempt=1,
        transcript=[
            TranscriptEntry(
                kind="tool_call", tool="list_pods", text='{"namespace": "shop"}'
            ),
            TranscriptEntry(kind="assistant", text="db-0 is Pending"),
        ],
    )
    text = str(render_detail(replace(DETAIL, result=result), UTC))
    assert "Model usage" in text and "cache reads       150" in text
    assert 'call   list_pods {"namespace": "shop"}' in text
    # A simulated result keeps the detail as it was.
    assert "Conversation" not in str(render_detail(DETAIL, UTC))


def replace_transcript(result: TaskResult) -> TaskResult:
    return result.model_copy(update={"transcript": []})
