"""The audit trail on disk: every task and every change of its state as JSON.

Each process appends to journal segments of its own,
``<dir>/<start ns>-<pid>.jsonl``, one JSON object per line. Records wait at
most ``flush_interval`` seconds in memory; then a background thread appends
the whole batch with one ``write`` and makes it durable with one ``fsync``
(group commit). A power cut can lose the last ``flush_interval`` of changes
plus the batch being written.

A reader never sees a half-written record: it takes only lines that end in a
newline and parse as a whole JSON object, so the torn tail of a batch cut
off by a crash is skipped. One file per change was measured first and
rejected: creating a file costs 80 to 250 µs here, which halved dispatch.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_SUFFIX = ".jsonl"
#: A segment is closed and a new one started past this size or age.
SEGMENT_BYTES = 64 * 1024 * 1024
SEGMENT_SECONDS = 3600.0


@dataclass(frozen=True)
class AuditRecord:
    task_id: str
    kind: str
    at: float
    data: dict[str, Any]


@dataclass(frozen=True)
class RawJSON:
    """A value that is already JSON text (one line), written as it is."""

    text: bytes


class _Flush:
    def __init__(self) -> None:
        self.done = threading.Event()


class AuditTrail:
    """Writes and reads the audit trail under ``root``."""

    def __init__(
        self, root: Path, *, flush_interval: float = 0.1, max_batch: int = 5000
    ) -> None:
        self.root = Path(root)
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        # Records wait here; the writer is woken for the first of a batch
        # only, so a busy producer pays a lock and an append per record.
        self._pending: list[AuditRecord | _Flush] = []
        self._cond = threading.Condition()
        self._urgent = False
        self._closing = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._segment: Path | None = None
        self._segment_size = 0
        self._segment_opened = 0.0
        self.written = 0
        self.failures = 0

    # Writing -----------------------------------------------------------------

    def record(self, task_id: str, kind: str, **data: Any) -> None:
        """Queue one change for writing; returns at once."""
        self._ensure_thread()
        rec = AuditRecord(task_id, kind, time.time(), data)
        with self._cond:
            self._pending.append(rec)
            n = len(self._pending)
            if n == 1 or n >= self.max_batch:
                self._cond.notify()

    def flush(self, timeout: float = 30.0) -> bool:
        """Block until every record queued so far is on disk."""
        marker = _Flush()
        self._ensure_thread()
        with self._cond:
            self._pending.append(marker)
            self._urgent = True
            self._cond.notify()
        return marker.done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued and stop the writer thread."""
        thread = self._thread
        if thread is None:
            return
        with self._cond:
            self._closing = True
            self._cond.notify()
        thread.join(timeout)
        if thread.is_alive():
            logger.error("audit: writer did not finish within %.1fs", timeout)
            return
        self._thread = None
        self._closing = False

    @property
    def segment(self) -> Path | None:
        """The file this process appends to now."""
        return self._segment

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="cortex-audit", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: bool(self._pending) or self._closing)
                    if not self._pending:
                        return
                    # Let the batch gather for up to flush_interval.
                    self._cond.wait_for(
                        lambda: (
                            self._urgent
                            or self._closing
                            or len(self._pending) >= self.max_batch
                        ),
                        timeout=self.flush_interval,
                    )
                    batch, self._pending = self._pending, []
                    self._urgent = False
                self._write_batch(batch)
        finally:
            self._close_segment()

    def _write_batch(self, batch: list[AuditRecord | _Flush]) -> None:
        records = [r for r in batch if isinstance(r, AuditRecord)]
        if records:
            try:
                self._append(records)
            except OSError:
                self.failures += len(records)
                logger.exception("audit: could not write %d records", len(records))
                self._close_segment()
        for item in batch:
            if isinstance(item, _Flush):
                item.done.set()

    def _append(self, records: list[AuditRecord]) -> None:
        lines = []
        for rec in records:
            body = {"task_id": rec.task_id, "kind": rec.kind, "at": rec.at}
            raw = {k: v for k, v in rec.data.items() if isinstance(v, RawJSON)}
            body.update((k, v) for k, v in rec.data.items() if k not in raw)
            try:
                line = json.dumps(body, ensure_ascii=False, default=_encode)
                if raw:
                    extra = "".join(
                        f", {json.dumps(k)}: {v.text.decode('utf-8')}"
                        for k, v in raw.items()
                    )
                    line = line[:-1] + extra + "}"
                lines.append(line)
            except (TypeError, ValueError, UnicodeDecodeError) as err:
                self.failures += 1
                logger.error(
                    "audit: task %s: %s record not encodable (%s); skipped",
                    rec.task_id,
                    rec.kind,
                    err,
                )
        if not lines:
            return
        data = ("\n".join(lines) + "\n").encode("utf-8")
        fd = self._open_segment()
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fdatasync(fd)
        self._segment_size += len(data)
        self.written += len(records)

    def _open_segment(self) -> int:
        now = time.monotonic()
        if self._fd is not None and (
            self._segment_size >= SEGMENT_BYTES
            or now - self._segment_opened >= SEGMENT_SECONDS
        ):
            self._close_segment()
        if self._fd is None:
            self.root.mkdir(parents=True, exist_ok=True)
            name = f"{time.time_ns():020d}-{os.getpid()}{_SUFFIX}"
            self._segment = self.root / name
            self._fd = os.open(
                self._segment, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
            )
            self._segment_size = 0
            self._segment_opened = now
            # Make the new file's name durable too.
            dir_fd = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return self._fd

    def _close_segment(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                logger.exception("audit: closing %s failed", self._segment)
            self._fd = None

    # Reading -----------------------------------------------------------------

    def segments(self) -> list[Path]:
        """Every segment, oldest first."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.suffix == _SUFFIX)

    def records(self) -> Iterator[dict[str, Any]]:
        """Every complete record, segment by segment, oldest segment first."""
        for path in self.segments():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            yield from _complete_records(data)

    def history(self, task_id: str) -> list[dict[str, Any]]:
        """Every recorded change of one task, oldest first."""
        found = [r for r in self.records() if r.get("task_id") == task_id]
        found.sort(key=lambda r: float(r.get("at", 0.0)))
        return found

    def files_of(self, task_id: str) -> list[Path]:
        """The segments that hold records of one task, oldest first."""
        needle = f'"task_id": "{task_id}"'.encode()
        compact = f'"task_id":"{task_id}"'.encode()
        found = []
        for path in self.segments():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if needle in data or compact in data:
                found.append(path)
        return found

    def task_ids(self) -> set[str]:
        return {str(r["task_id"]) for r in self.records() if "task_id" in r}


def _encode(value: object) -> object:
    """JSON for what json cannot encode itself: pydantic models (encoded here,
    in the writer thread, rather than on the caller's event loop), else str."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    return str(value)


def _complete_records(data: bytes) -> Iterator[dict[str, Any]]:
    end = data.rfind(b"\n")
    if end < 0:
        return
    for line in data[:end].split(b"\n"):
        if not line:
            continue
        try:
            value = json.loads(line)
        except ValueError:
            # A torn or damaged line: not a record.
            continue
        if isinstance(value, dict):
            yield value
