"""One row per worker process or pod, from its heartbeat."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import DataTable

from cortex_core.snapshot import WorkerRow
from cortex_tui import formatting

NAME_WIDTH = 24
"""Longest worker name shown; longer names keep their distinct end."""

_STATE_STYLES = {
    "running": "green",
    "starting": "cyan",
    "draining": "italic yellow",
    "exited": "dim",
    "missing": "bold reverse red",
}


class WorkerTable(DataTable[Text]):
    """Name, state, CPU, memory, current tasks and totals of every worker."""

    worker_rows: reactive[tuple[WorkerRow, ...]] = reactive((), init=False)
    """The rows of the latest snapshot, in the order the system gave them."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(
            id=id, show_cursor=False, cursor_type="none", zebra_stripes=True
        )
        self.border_title = "Workers"

    def watch_worker_rows(self, workers: tuple[WorkerRow, ...]) -> None:
        self.clear()
        for row in workers:
            self.add_row(*self._cells(row))
        self.border_title = f"Workers ({len(workers)})"

    def on_mount(self) -> None:
        self.add_column("name")
        self.add_column("state")
        for label in ("CPU %", "MiB"):
            self.add_column(Text(label, justify="right"))
        self.add_column("tasks")
        for label in ("done", "failed"):
            self.add_column(Text(label, justify="right"))

    def _cells(self, row: WorkerRow) -> tuple[Text, ...]:
        no_color = self.app.no_color
        state_style = _STATE_STYLES.get(row.state, "")
        failed_style = "bold red" if row.failed else ""
        return (
            Text(formatting.tail(row.name, NAME_WIDTH)),
            Text(row.state, style=formatting.paint(state_style, no_color=no_color)),
            Text(formatting.percent(row.cpu_percent), justify="right"),
            Text(formatting.mebibytes(row.rss_bytes), justify="right"),
            Text(formatting.task_list(row.current)),
            Text(formatting.count(row.done), justify="right"),
            Text(
                formatting.count(row.failed),
                justify="right",
                style=formatting.paint(failed_style, no_color=no_color),
            ),
        )
