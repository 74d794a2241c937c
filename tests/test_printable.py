"""No text from Redis reaches the operator's terminal as a control sequence."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from helpers import make_task
from pydantic import BaseModel

from cortex_core.heartbeat import WorkerInfo
from cortex_core.models import Task, TaskResult
from cortex_core.printable import clean, printable
from cortex_core.snapshot import TaskFilter
from cortex_core.system import ControlPlane, Services

#: Retitles an xterm, then turns the text red: what an attacker would send.
HOSTILE = "before \x1b]0;pwned\x07 \x1b[31mRED\x1b[0m \r\x9b2J after"


def test_control_characters_become_visible_symbols() -> None:
    shown = printable(HOSTILE)
    assert shown.isprintable()
    assert "\u241b]0;pwned\u2407" in shown  # ESC and BEL as their pictures
    assert "\u240d" in shown and "\ufffd2J" in shown  # CR, and CSI (C1)


def test_newline_tab_and_plain_text_are_kept() -> None:
    text = "line one\n\tline two — ünïcödé, עברית, 😀"
    assert printable(text) is text or printable(text) == text
    assert printable("a\nb\tc") == "a\nb\tc"


def test_clean_keeps_enums_and_numbers() -> None:
    task = make_task()
    value: Any = {"priority": task.priority, "n": 3, "s": ("x\x1b",)}
    out = clean(value)
    assert out["priority"] is task.priority
    assert out == {"priority": task.priority, "n": 3, "s": ("x\u241b",)}


def _strings(value: Any) -> list[str]:
    """Every string inside ``value`` (dataclasses, models, containers)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(k) + _strings(v)]
    if isinstance(value, (list, tuple, set, frozenset)):
        return [s for item in value for s in _strings(item)]
    if dataclasses.is_dataclass(value):
        names = [f.name for f in dataclasses.fields(value)]
    elif isinstance(value, BaseModel):
        names = list(type(value).model_fields)
    else:
        return []
    return [s for name in names for s in _strings(getattr(value, name))]


def _assert_printable(value: Any) -> None:
    bad = [s for s in _strings(value) if printable(s) != s]
    assert not bad, f"control characters reach the console: {bad[:3]}"


@pytest.fixture
def control(services: Services) -> ControlPlane:
    return ControlPlane(services, None)


async def test_what_the_console_is_given_is_printable(
    services: Services, control: ControlPlane
) -> None:
    """A hostile query, result, error and worker name: every list, the
    detail and the snapshot show them without a control character."""
    task = Task.create(query=HOSTILE, category="cicd", priority="critical")
    dead = make_task(max_attempts=1)
    await services.enqueue([task, dead])
    claim = await services.queue.claim("w\x1b]0;x\x07", 5000)
    assert claim is not None and claim.task_id == task.id
    result = TaskResult(
        task_id=task.id,
        ok=True,
        output=HOSTILE + "\nsecond line",
        model="simulated",
        simulated=True,
        worker="w\x1b]0;x\x07",
    )
    assert await services.queue.complete(claim, result)
    claim = await services.queue.claim("w2", 5000)
    assert claim is not None
    await services.queue.fail(claim, "model: " + HOSTILE, retryable=False)
    await services.heartbeats.beat(
        WorkerInfo(worker_id="w\x1b[2J", host="h\x07", pid=1, started_at=0.0)
    )

    snap = await control.snapshot()
    _assert_printable(snap)
    assert any("\u241b" in w.name for w in snap.workers)
    for view in ("tasks", "dead"):
        _assert_printable(await control.tasks(view, TaskFilter()))
    detail = await control.task_detail(task.id)
    _assert_printable(detail)
    assert detail.query.startswith("before \u241b]0;pwned")
    assert detail.result is not None and "\nsecond line" in detail.result.output
    _assert_printable(await control.task_detail(dead.id))
