"""The workers view: every worker process or pod, the whole screen high."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Label

from cortex_core.snapshot import Snapshot, WorkerRow
from cortex_tui.screens.view import ViewScreen
from cortex_tui.widgets.workers import WorkerTable


class WorkersScreen(ViewScreen):
    """Workers with state, CPU, memory, current tasks and totals; the filter's
    free text matches a worker's name, host, state or current task ids."""

    AUTO_FOCUS = "#worker-list"
    VIEW = "workers"

    def compose_body(self) -> ComposeResult:
        yield Label("", id="list-status")
        yield WorkerTable(
            id="worker-list", cluster=self._control.header.kube_context is not None
        )

    def show_snapshot(self, snapshot: Snapshot, page: object) -> None:
        self._show()

    def filter_changed(self, text: str) -> None:
        if self.set_filter(text, quiet=True):
            self._show()

    def filter_submitted(self, text: str) -> None:
        self.set_filter(text)
        self._show()

    def _show(self) -> None:
        workers = self._last.workers if self._last else ()
        words = self.task_filter.text.lower().split()
        shown = tuple(w for w in workers if all(x in _haystack(w) for x in words))
        table = self.query_one(WorkerTable)
        if self._last is not None:
            table.now = self._last.taken_at
        table.worker_rows = shown
        status = f"Workers {len(shown)} of {len(workers)}"
        if self.filter_text:
            status += f" · filter: {self.filter_text}"
        self.query_one("#list-status", Label).update(status)


def _haystack(worker: WorkerRow) -> str:
    return " ".join((worker.name, worker.host, worker.state, *worker.current)).lower()
