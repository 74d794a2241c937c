"""The on-disk audit trail: ordering, whole records only, flush and close."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cortex_core.audit import AuditTrail
from cortex_core.models import new_task_id


@pytest.fixture
def trail(tmp_path: Path) -> Iterator[AuditTrail]:
    audit = AuditTrail(tmp_path / "audit", flush_interval=0.01)
    yield audit
    audit.close()


@pytest.fixture
def task_id() -> str:
    return new_task_id()


def complete_lines(path: Path) -> list[bytes]:
    """The newline-terminated lines of a segment, as a reader may take them."""
    data = path.read_bytes()
    return [line for line in data[: data.rfind(b"\n") + 1].split(b"\n") if line]


def test_records_are_written_and_read_back_in_order(
    trail: AuditTrail, task_id: str
) -> None:
    """history() returns every record of a task, oldest first, with its data."""
    kinds = ["enqueued", "claimed", "retry", "claimed", "done"]
    for n, kind in enumerate(kinds):
        trail.record(task_id, kind, n=n, worker="w1")
    assert trail.flush(timeout=10)
    history = trail.history(task_id)
    assert [r["kind"] for r in history] == kinds
    assert [r["n"] for r in history] == list(range(len(kinds)))
    assert all(r["task_id"] == task_id and r["worker"] == "w1" for r in history)
    assert trail.written == len(kinds)
    assert trail.failures == 0


def test_histories_of_tasks_are_kept_apart(trail: AuditTrail) -> None:
    """Each task has its own history; task_ids() names every task written."""
    first, second = new_task_id(), new_task_id()
    trail.record(first, "enqueued")
    trail.record(second, "enqueued")
    trail.record(second, "done", tokens=136)
    assert trail.flush(timeout=10)
    assert [r["kind"] for r in trail.history(first)] == ["enqueued"]
    assert [r["kind"] for r in trail.history(second)] == ["enqueued", "done"]
    assert set(trail.task_ids()) == {first, second}


def test_history_of_unknown_task_is_empty(trail: AuditTrail) -> None:
    """A task never recorded has an empty history, not an error."""
    assert trail.history(new_task_id()) == []
    assert not set(trail.task_ids())


@pytest.mark.parametrize(
    "task_id",
    [
        "ffffffffffff000000000000",
        "9f86d081884c7d659a2feaa0",
        "0000000000000000000000ab",
    ],
)
def test_history_of_any_valid_task_id(trail: AuditTrail, task_id: str) -> None:
    """Any valid 24-hex id has its history, not only ids made from the clock."""
    trail.record(task_id, "requeued", by="console")
    assert trail.flush(timeout=10)
    assert [r["kind"] for r in trail.history(task_id)] == ["requeued"]


def test_special_characters_stay_inside_one_record(
    trail: AuditTrail, task_id: str
) -> None:
    """Newlines, NUL, U+2028 and RTL text in data neither split nor change a record."""
    query = "line one\nline two\r\n\x00 \u2028 تحقق 🚀 בדוק"
    trail.record(task_id, "enqueued", task={"query": query})
    trail.record(task_id, "done")
    assert trail.flush(timeout=10)
    history = trail.history(task_id)
    assert [r["kind"] for r in history] == ["enqueued", "done"]
    assert history[0]["task"]["query"] == query


def test_reader_never_sees_a_partial_record(tmp_path: Path, task_id: str) -> None:
    """While records are written, every line a reader takes is a whole record."""
    audit = AuditTrail(tmp_path / "audit", flush_interval=0.001, max_batch=7)
    total = 400
    padding = "x" * 4096
    producing = threading.Event()
    producing.set()

    def produce() -> None:
        for n in range(total):
            audit.record(task_id, "step", n=n, padding=padding)
        audit.flush(timeout=30)
        producing.clear()

    writer = threading.Thread(target=produce, name="test-producer")
    writer.start()
    lines_read = 0
    seen = 0
    try:
        while producing.is_set() or lines_read == 0:
            for segment in audit.segments():
                for line in complete_lines(segment):
                    body = json.loads(line)
                    assert body["padding"] == padding
                    lines_read += 1
            numbers = [r["n"] for r in audit.history(task_id)]
            assert numbers == list(range(len(numbers)))
            assert len(numbers) >= seen
            seen = len(numbers)
    finally:
        writer.join(30)
        audit.close()
    assert not writer.is_alive()
    assert [r["n"] for r in audit.history(task_id)] == list(range(total))
    assert lines_read > 0


def test_torn_tail_of_a_segment_is_not_a_record(tmp_path: Path, task_id: str) -> None:
    """A segment cut off mid-record (a crash) yields only its whole records."""
    root = tmp_path / "audit"
    audit = AuditTrail(root)
    audit.record(task_id, "enqueued")
    assert audit.flush(timeout=10)
    audit.close()
    torn = root / "99999999999999999999-1.jsonl"
    whole = json.dumps({"task_id": task_id, "kind": "claimed", "at": 1e12})
    torn.write_text(whole + '\n{"task_id": "' + task_id + '", "kind": "do', "utf-8")
    assert [r["kind"] for r in AuditTrail(root).history(task_id)] == [
        "enqueued",
        "claimed",
    ]


def test_flush_makes_records_visible(tmp_path: Path, task_id: str) -> None:
    """After flush() returns True, another reader of the folder sees every record."""
    root = tmp_path / "audit"
    audit = AuditTrail(root, flush_interval=0.05)
    try:
        for n in range(25):
            audit.record(task_id, "step", n=n)
        assert audit.flush(timeout=10) is True
        reader = AuditTrail(root)
        assert [r["n"] for r in reader.history(task_id)] == list(range(25))
    finally:
        audit.close()


def test_close_writes_what_was_queued(tmp_path: Path, task_id: str) -> None:
    """close() writes every record still queued before it returns."""
    root = tmp_path / "audit"
    audit = AuditTrail(root, flush_interval=0.5)
    for n in range(300):
        audit.record(task_id, "step", n=n)
    audit.close()
    assert audit.written == 300
    assert [r["n"] for r in AuditTrail(root).history(task_id)] == list(range(300))


def test_trail_is_usable_after_close(tmp_path: Path, task_id: str) -> None:
    """Recording after close() starts a new writer; nothing is lost."""
    root = tmp_path / "audit"
    audit = AuditTrail(root)
    audit.record(task_id, "enqueued")
    audit.close()
    audit.record(task_id, "requeued")
    audit.close()
    assert [r["kind"] for r in AuditTrail(root).history(task_id)] == [
        "enqueued",
        "requeued",
    ]


def test_two_writers_share_one_history(tmp_path: Path, task_id: str) -> None:
    """Records of one task from two writers (two processes) merge in time order."""
    root = tmp_path / "audit"
    console, worker = AuditTrail(root), AuditTrail(root)
    try:
        console.record(task_id, "enqueued")
        assert console.flush(timeout=10)
        worker.record(task_id, "claimed")
        assert worker.flush(timeout=10)
        console.record(task_id, "requeued")
        assert console.flush(timeout=10)
    finally:
        console.close()
        worker.close()
    assert len(AuditTrail(root).segments()) == 2
    assert [r["kind"] for r in AuditTrail(root).history(task_id)] == [
        "enqueued",
        "claimed",
        "requeued",
    ]


def test_unserialisable_record_does_not_stop_the_trail(
    trail: AuditTrail, task_id: str
) -> None:
    """A record whose data cannot be JSON-encoded does not stop later records."""
    trail.record(task_id, "odd", data={(1, 2): "tuple key"})
    trail.record(task_id, "done")
    assert trail.flush(timeout=3)
    assert "done" in [r["kind"] for r in trail.history(task_id)]


def test_close_without_records_is_harmless(tmp_path: Path) -> None:
    """close() on a trail that never wrote does nothing and creates nothing."""
    root = tmp_path / "audit"
    audit = AuditTrail(root)
    audit.close()
    assert not root.exists()
