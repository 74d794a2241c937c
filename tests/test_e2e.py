"""``cortex stress`` end to end, against the test Redis and in embedded mode."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from helpers import pid_alive, processes_under, run_cli

_REPORT_KEYS = {
    "tasks",
    "workers",
    "creation_seconds",
    "completed",
    "failed",
    "lost",
    "duplicates",
    "priority_inversions",
    "avg_task_seconds",
    "tokens_per_task",
    "peak_tokens_per_minute",
    "token_limit",
    "tasks_per_minute",
}


def _stress(env: dict[str, str], *extra: str) -> dict[str, Any]:
    result = run_cli(
        "stress",
        "--tasks",
        "50",
        "--workers",
        "2",
        "--latency",
        "0.05:0.1",
        "--timeout",
        "60",
        "--json",
        *extra,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines, "stress printed nothing"
    report: dict[str, Any] = json.loads(lines[-1])
    return report


def _check_report(report: dict[str, Any]) -> None:
    missing = _REPORT_KEYS - report.keys()
    assert not missing, f"report lacks {sorted(missing)}"
    assert (report["tasks"], report["workers"]) == (50, 2)
    assert report["completed"] == 50
    assert report["failed"] == 0
    assert report["lost"] == 0
    assert report["duplicates"] == 0
    assert report["priority_inversions"] == 0
    tokens = report["tokens_per_task"]
    assert set(tokens) == {"min", "mean", "max"}
    assert 100 <= tokens["min"] <= tokens["mean"] <= tokens["max"] <= 136, tokens
    assert report["token_limit"] == 40_000
    assert 0 < report["peak_tokens_per_minute"] <= report["token_limit"]
    assert report["avg_task_seconds"] > 0
    assert report["tasks_per_minute"] > 0
    assert report["creation_seconds"] >= 0


def _without_settings(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith("CORTEX_")}


def test_stress_against_a_given_redis(
    redis_url: str, child_env: dict[str, str], tmp_path: Path
) -> None:
    """50 tasks on 2 workers all complete once, in priority order, none lost."""
    data = tmp_path / "stress"
    report = _stress(
        _without_settings(child_env),
        "--redis-url",
        redis_url,
        "--data-dir",
        str(data),
    )
    _check_report(report)
    assert report["simulated"] is True
    assert not processes_under(data), "a process of the run is still alive"


def test_stress_in_embedded_mode(child_env: dict[str, str], tmp_path: Path) -> None:
    """With no Redis URL, stress starts its own redis-server and stops it after."""
    data = tmp_path / "embedded"
    report = _stress(_without_settings(child_env), "--data-dir", str(data))
    _check_report(report)
    redis_dir = data / "redis"
    assert (redis_dir / "redis.conf").is_file(), "no embedded server was started"
    aof = [redis_dir / "appendonly.aof", redis_dir / "appendonlydir"]
    assert any(p.exists() for p in aof), "no append-only file written"
    assert not (redis_dir / "server.json").exists(), "server.json left behind"
    log = (redis_dir / "redis.log").read_text(errors="replace")
    pids = {int(p) for p in re.findall(r"\bpid=(\d+)", log)}
    assert pids, "redis.log names no server pid"
    for pid in pids:
        assert not pid_alive(pid), f"redis-server {pid} still runs"
    left = processes_under(data)
    assert not left, f"processes left under the data dir: {left}"
