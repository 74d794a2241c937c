"""The task and result types: validation messages and JSON round trips."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cortex_core.errors import TaskValidationError
from cortex_core.models import (
    MAX_OUTPUT_BYTES,
    MAX_QUERY_BYTES,
    Priority,
    Task,
    TaskResult,
)

QUERY = "Analyze cluster health for the security domain. Check pod status."


def fields(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "query": QUERY,
        "category": "security",
        "priority": "high",
    }
    base.update(changes)
    return base


def rejection(**changes: Any) -> str:
    with pytest.raises(TaskValidationError) as info:
        Task.create(**fields(**changes))
    return str(info.value)


@pytest.mark.parametrize(
    ("changes", "field", "rule"),
    [
        ({"query": ""}, "query", "must not be empty"),
        ({"query": " \t\n "}, "query", "must not be empty"),
        ({"query": "a" * (MAX_QUERY_BYTES + 1)}, "query", "at most 16384 bytes"),
        ({"query": "a\ud800b"}, "query", "lone surrogates"),
        ({"category": "Security"}, "category", "lowercase letter"),
        ({"category": ""}, "category", "lowercase letter"),
        ({"category": "9lives"}, "category", "lowercase letter"),
        ({"category": "a" * 33}, "category", "1 to 32 characters"),
        ({"category": "sec urity"}, "category", "lowercase letter"),
        ({"priority": "urgent"}, "priority", "'critical', 'high', 'medium' or 'low'"),
        ({"priority": 1}, "priority", "'critical', 'high', 'medium' or 'low'"),
        ({"bogus": 1}, "bogus", "Extra inputs are not permitted"),
        ({"idempotency_key": ""}, "idempotency_key", "1 to 200 bytes"),
        ({"idempotency_key": "k" * 201}, "idempotency_key", "1 to 200 bytes"),
        ({"idempotency_key": "é" * 101}, "idempotency_key", "1 to 200 bytes"),
        ({"idempotency_key": "key\udc00"}, "idempotency_key", "lone surrogates"),
        ({"id": "not-an-id"}, "id", "24 lowercase hex digits"),
        ({"max_attempts": 0}, "max_attempts", "greater than or equal to 1"),
        ({"attempts": -1}, "attempts", "greater than or equal to 0"),
    ],
)
def test_bad_field_is_named_with_its_rule(
    changes: dict[str, Any], field: str, rule: str
) -> None:
    """A bad field gets an error that names the field and the rule it breaks."""
    message = rejection(**changes)
    assert message.startswith(f"{field}: ")
    assert rule in message


def test_every_bad_field_is_reported() -> None:
    """Several bad fields give one ``field: rule`` part each."""
    message = rejection(query="", category="BAD", priority="none")
    parts = message.split("; ")
    assert [p.split(":", 1)[0] for p in parts] == ["query", "category", "priority"]


def test_query_limit_counts_utf8_bytes_not_characters() -> None:
    """A query of few characters but over 16384 bytes of UTF-8 is refused."""
    two_byte = "é" * (MAX_QUERY_BYTES // 2 + 1)
    assert len(two_byte) < MAX_QUERY_BYTES
    message = rejection(query=two_byte)
    assert message.startswith("query: ")
    assert f"got {MAX_QUERY_BYTES + 2}" in message
    four_byte = "😀" * (MAX_QUERY_BYTES // 4 + 1)
    assert rejection(query=four_byte).startswith("query: ")


def test_query_of_exactly_the_limit_is_accepted() -> None:
    """A query of exactly 16384 bytes of UTF-8 (one or many bytes a character) fits."""
    for query in ("a" * MAX_QUERY_BYTES, "😀" * (MAX_QUERY_BYTES // 4)):
        assert Task.create(**fields(query=query)).query == query


def test_category_with_trailing_newline_is_refused() -> None:
    """A category with a trailing newline is not a short lowercase name."""
    assert rejection(category="security\n").startswith("category: ")


def test_task_id_with_trailing_newline_is_refused() -> None:
    """An id is exactly 24 hex digits; a trailing newline makes it invalid."""
    assert rejection(id="0123456789abcdef01234567\n").startswith("id: ")


def test_any_short_lowercase_category_is_valid() -> None:
    """Categories beyond the reference five are accepted when well formed."""
    task = Task.create(**fields(category="storage-v2_x"))
    assert task.category == "storage-v2_x"


def test_new_tasks_get_valid_ids_and_defaults() -> None:
    """A created task has a 24-hex id, no attempts yet and a priority enum."""
    task = Task.create(**fields())
    assert len(task.id) == 24
    assert int(task.id, 16) >= 0
    assert task.attempts == 0
    assert task.priority is Priority.HIGH


def test_task_json_round_trip() -> None:
    """to_json then from_json gives back an equal task, field for field."""
    task = Task.create(
        **fields(
            query="Check pods in ns «prod» — 🚀",
            priority=Priority.CRITICAL,
            max_attempts=5,
            token_estimate=1234,
            idempotency_key="batch-7/task-3",
        )
    )
    data = task.to_json()
    assert isinstance(data, bytes)
    back = Task.from_json(data)
    assert back == task
    assert back.to_json() == data
    assert Task.from_json(data.decode("utf-8")) == task


def test_result_json_round_trip() -> None:
    """A TaskResult survives to_json and from_json unchanged."""
    result = TaskResult(
        task_id="0123456789abcdef01234567",
        ok=False,
        output="partial ✓",
        error="timeout",
        model="simulated",
        simulated=True,
        input_tokens=100,
        output_tokens=36,
        worker="w1",
        attempt=2,
        started_at=10.0,
        finished_at=13.5,
    )
    back = TaskResult.from_json(result.to_json())
    assert back == result
    assert back.total_tokens == 136
    assert back.seconds == 3.5


@pytest.mark.parametrize(
    "data",
    [b"{not json", b"", b'{"query": "unterminated', "{'single': 'quotes'}"],
)
def test_from_json_on_bad_json_says_decode(data: bytes | str) -> None:
    """Bad JSON gives TaskValidationError starting with ``decode:``."""
    with pytest.raises(TaskValidationError) as info:
        Task.from_json(data)
    assert str(info.value).startswith("decode: ")


@pytest.mark.parametrize("data", [b"\xff\xfe\xfd", b'{"query": "caf\xe9"}'])
def test_from_json_on_non_utf8_says_decode(data: bytes) -> None:
    """Bytes that are not UTF-8 give TaskValidationError starting with ``decode:``."""
    with pytest.raises(TaskValidationError) as info:
        Task.from_json(data)
    assert str(info.value).startswith("decode: not UTF-8")


def test_from_json_of_valid_json_with_bad_field_names_the_field() -> None:
    """Well-formed JSON with a broken field is reported field by field."""
    good = Task.create(**fields()).model_dump(mode="json")
    good["priority"] = "someday"
    with pytest.raises(TaskValidationError) as info:
        Task.from_json(json.dumps(good))
    assert str(info.value).startswith("priority: ")


def test_result_output_limit_counts_utf8_bytes() -> None:
    """A result's output is limited to MAX_OUTPUT_BYTES bytes of UTF-8."""
    output = "😀" * (MAX_OUTPUT_BYTES // 4 + 1)
    with pytest.raises(ValueError, match="output"):
        TaskResult(
            task_id="0123456789abcdef01234567",
            ok=True,
            output=output,
            model="simulated",
            simulated=True,
        )
