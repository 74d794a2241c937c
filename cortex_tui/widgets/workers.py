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
    "not ready": "yellow",
    "pending": "cyan",
    "terminating": "italic yellow",
}
NOT_AVAILABLE = "n/a"
"""CPU and memory of a pod when the metrics API has no figure."""


class WorkerTable(DataTable[Text]):
    """Name, state, CPU, memory, current tasks and totals of every worker."""

    worker_rows: reactive[tuple[WorkerRow, ...]] = reactive((), init=False)
    """The rows of the latest snapshot, in the order the system gave them."""

    now: float | None = None
    """When the rows were taken: pod ages count to it (cluster mode)."""

    def __init__(self, *, id: str | None = None, cluster: bool = False) -> None:
        super().__init__(
            id=id, show_cursor=False, cursor_type="none", zebra_stripes=True
        )
        self.border_title = "Workers"
        self.cluster = cluster
        """Rows are pods: node, restarts and age columns; n/a for no metrics."""

    def watch_worker_rows(self, workers: tuple[WorkerRow, ...]) -> None:
        self.clear()
        for row in workers:
            self.add_row(*self._cells(row))
        self.border_title = f"Workers ({len(workers)})"

    def on_mount(self) -> None:
        self.add_column("name")
        self.add_column("state")
        if self.cluster:
            self.add_column("node")
            for label in ("restarts", "age"):
                self.add_column(Text(label, justify="right"))
        for label in ("CPU %", "MiB"):
            self.add_column(Text(label, justify="right"))
        self.add_column("tasks")
        for label in ("done", "failed"):
            self.add_column(Text(label, justify="right"))

    def _cells(self, row: WorkerRow) -> tuple[Text, ...]:
        no_color = self.app.no_color
        state_style = _STATE_STYLES.get(row.state, "")
        failed_style = "bold red" if row.failed else ""
        cpu = formatting.percent(row.cpu_percent)
        mib = formatting.mebibytes(row.rss_bytes)
        pod: tuple[Text, ...] = ()
        if self.cluster:
            if row.cpu_percent is None:
                cpu = NOT_AVAILABLE
            if row.rss_bytes is None:
                mib = NOT_AVAILABLE
            started = row.started_at
            age = None if started is None or self.now is None else self.now - started
            restarts = formatting.MISSING if row.restarts is None else str(row.restarts)
            pod = (
                Text(row.node or formatting.MISSING),
                Text(restarts, justify="right"),
                Text(formatting.age(age), justify="right"),
            )
        return (
            Text(formatting.tail(row.name, NAME_WIDTH)),
            Text(row.state, style=formatting.paint(state_style, no_color=no_color)),
            *pod,
            Text(cpu, justify="right"),
            Text(mib, justify="right"),
            Text(formatting.task_list(row.current)),
            Text(formatting.count(row.done), justify="right"),
            Text(
                formatting.count(row.failed),
                justify="right",
                style=formatting.paint(failed_style, no_color=no_color),
            ),
        )
