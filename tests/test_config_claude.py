"""Settings of the Claude executor, its tools and the shared budget."""

from __future__ import annotations

from typing import Any

import pytest

from cortex_core.claude import ClaudeConfig
from cortex_core.config import Settings
from cortex_core.errors import ConfigError

KEY = "sk-test-not-a-real-key"


def test_simulated_without_a_key_claude_with_one() -> None:
    assert Settings.load({}, environ={}).executor == "simulated"
    s = Settings.load({}, environ={"ANTHROPIC_API_KEY": KEY})
    assert s.executor == "claude" and s.anthropic_api_key == KEY
    own = Settings.load(
        {}, environ={"CORTEX_ANTHROPIC_API_KEY": "mine", "ANTHROPIC_API_KEY": KEY}
    )
    assert own.anthropic_api_key == "mine"
    # Asked for explicitly, the simulated model stays even with a key.
    sim = Settings.load({"executor": "simulated"}, environ={"ANTHROPIC_API_KEY": KEY})
    assert sim.executor == "simulated"


def test_the_key_is_never_shown() -> None:
    s = Settings.load({}, environ={"ANTHROPIC_API_KEY": KEY})
    assert KEY not in repr(s)
    assert KEY not in repr(ClaudeConfig.from_settings(s))


def test_claude_without_a_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="executor: claude needs an API key"):
        Settings.load({"executor": "claude"}, environ={})


def test_claude_config_follows_the_settings() -> None:
    s = Settings.load(
        {
            "anthropic_api_key": KEY,
            "model": "claude-opus-4-1",
            "max_tokens": 2048,
            "max_tool_rounds": 5,
            "task_token_cap": 30_000,
            "cheap_model": "claude-haiku-4-5",
            "cheap_for": "low, inventory",
        },
        environ={},
    )
    cfg = ClaudeConfig.from_settings(s)
    assert (cfg.model, cfg.max_tokens, cfg.max_rounds) == ("claude-opus-4-1", 2048, 5)
    assert cfg.task_token_cap == 30_000
    assert cfg.cheap_for == frozenset({"low", "inventory"})


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"model": "bad model name"}, "model"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tool_rounds": 0}, "max_tool_rounds"),
        ({"task_token_cap": 0}, "task_token_cap"),
        ({"held_share": 0.95}, "held_share"),
        ({"rate_window_seconds": 0.5}, "rate_window_seconds"),
        ({"result_cache_seconds": -1}, "result_cache_seconds"),
        ({"cheap_for": "low"}, "cheap_for"),
        ({"cheap_model": "m", "cheap_for": "Not A Category"}, "cheap_for"),
        ({"anthropic_base_url": "ftp://x"}, "anthropic_base_url"),
        ({"tools": "shell"}, "tools"),
        ({"tool_namespaces": "shop,Bad_NS"}, "tool_namespaces"),
        ({"kube_timeout_seconds": 0}, "kube_timeout_seconds"),
    ],
)
def test_bad_values_name_the_setting(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}:"):
        Settings.load({"anthropic_api_key": KEY, **overrides}, environ={})


def test_tool_namespaces_default_to_the_target_namespace() -> None:
    s = Settings.load({}, environ={})
    assert s.tool_namespace_list(default="cortex") == ("cortex",)
    s = Settings.load({"tool_namespaces": "shop, web ,*"}, environ={})
    assert s.tool_namespace_list(default="cortex") == ("shop", "web", "*")
