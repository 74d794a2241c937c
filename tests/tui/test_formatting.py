"""How values are written: ids, sizes, names, times and graph ticks."""

from __future__ import annotations

from datetime import UTC, timedelta, timezone

import pytest

from cortex_tui import formatting
from cortex_tui.widgets.tokens import _steps, _time_ticks

from .fixtures import NOW


def test_task_lists_show_the_first_id_and_how_many_more() -> None:
    assert formatting.task_list(()) == "-"
    assert formatting.task_list(("a" * 24,)) == "a" * 8
    assert formatting.task_list(("a" * 24, "b" * 24, "c" * 24)) == "aaaaaaaa +2"


def test_long_names_keep_their_end() -> None:
    assert formatting.tail("worker-1", 10) == "worker-1"
    assert formatting.tail("cortex-worker-7d9f8b6c5-x2k4p", 10) == "…6c5-x2k4p"
    assert len(formatting.tail("cortex-worker-7d9f8b6c5-x2k4p", 10)) == 10


def test_sizes_and_limits() -> None:
    assert formatting.mebibytes(None) == "-"
    assert formatting.mebibytes(3 * 1_048_576 + 10) == "3"
    assert formatting.percent(None) == "-"
    assert formatting.percent(7.25) == "7.2"
    assert formatting.token_limit(0) == "unlimited"
    assert formatting.token_limit(40_000) == "40,000 tok/min"


def test_clock_uses_the_zone_it_is_given() -> None:
    assert formatting.clock(NOW, UTC) == "12:00:00"
    assert formatting.clock(NOW, timezone(timedelta(hours=-7))) == "05:00:00"
    # The suite's local zone is +05:45 (see conftest), so None means that.
    assert formatting.clock(NOW, None) == "17:45:00"


@pytest.mark.parametrize(
    ("top", "ticks"),
    [(47_150, [0, 20_000, 40_000]), (14, [0, 5, 10]), (1.15, [0, 0.5, 1.0])],
)
def test_axis_steps_are_round(top: float, ticks: list[float]) -> None:
    assert _steps(top) == ticks


def test_short_spans_are_labelled_in_seconds() -> None:
    positions, labels = _time_ticks(55)
    assert labels == ["now", "-20s", "-40s"]
    assert positions == [0, -20 / 60, -40 / 60]
    assert _time_ticks(15 * 60)[1] == ["now", "-5m", "-10m", "-15m"]
