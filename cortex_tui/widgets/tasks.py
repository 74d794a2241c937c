"""A page of tasks, sorted by a column, with a cursor that picks one."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import tzinfo

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import RowDoesNotExist

from cortex_core.snapshot import TaskRow
from cortex_tui import formatting

COLUMNS = ("task", "status", "priority", "category", "attempts", "worker", "query")
"""Columns of the tasks view; the dead-letter view shows the reason last."""
DEAD_COLUMNS = ("task", "priority", "category", "attempts", "finished", "reason")

MIN_LAST = 12
"""The last column never gets narrower than this."""

_PRIORITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3}
_STATE_ORDER = {"running": 0, "pending": 1, "dead": 2, "done": 3}
_STATE_STYLES = {"running": "cyan", "dead": "bold red", "done": "green"}


def sort_key(column: str, row: TaskRow) -> tuple[object, ...]:
    """What ``column`` sorts ``row`` by (priority and status in their order)."""
    values: dict[str, object] = {
        "task": row.task_id,
        "status": _STATE_ORDER.get(row.state, 9),
        "priority": _PRIORITY_ORDER.get(row.priority, 9),
        "category": row.category,
        "attempts": row.attempts,
        "worker": row.worker,
        "query": row.query,
        "finished": row.finished_at or 0.0,
        "reason": row.reason,
    }
    return (values.get(column, ""), row.task_id)


class TaskTable(DataTable[Text]):
    """The rows of one page; ``sort_by`` picks the column and direction.

    DataTable draws only the lines in view, so a long page costs its rows'
    cells once, not a redraw of every row per frame.
    """

    def __init__(
        self,
        columns: Sequence[str],
        *,
        tz: tzinfo | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.columns_shown = tuple(columns)
        self._tz = tz
        self.sort_column = ""
        self.sort_reverse = False
        self._rows: tuple[TaskRow, ...] = ()

    def on_mount(self) -> None:
        for name in self.columns_shown:
            self.add_column(name, key=name)

    def on_resize(self) -> None:
        self.show(self._rows)

    @property
    def selected_task_id(self) -> str | None:
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except RowDoesNotExist:
            return None
        return key.value

    @property
    def task_rows(self) -> tuple[TaskRow, ...]:
        """The rows shown, in the order shown."""
        return self._rows

    def show(self, rows: Sequence[TaskRow]) -> None:
        """Replace the rows; the cursor stays on its task if it is still here."""
        kept = self.selected_task_id
        ordered = list(rows)
        if self.sort_column:
            ordered.sort(
                key=lambda r: sort_key(self.sort_column, r), reverse=self.sort_reverse
            )
        self._rows = tuple(ordered)
        cells = [self._cells(row) for row in self._rows]
        names = self.columns_shown
        widths = [
            max([len(name), *(len(r[i].plain) for r in cells)])
            for i, name in enumerate(names)
        ]
        # The last column (query or reason) takes what is left of the width.
        used = sum(widths[:-1]) + 2 * self.cell_padding * len(names)
        widths[-1] = max(MIN_LAST, self.scrollable_content_region.width - used)
        self.clear(columns=True)
        for name, width in zip(names, widths, strict=True):
            self.add_column(name, width=width, key=name)
        for row, row_cells in zip(self._rows, cells, strict=True):
            self.add_row(*row_cells, key=row.task_id)
        if kept is not None:
            # A task that left the page leaves the cursor where it was.
            with contextlib.suppress(RowDoesNotExist):
                self.move_cursor(row=self.get_row_index(kept), scroll=True)

    def sort_by(self, column: str) -> None:
        """Sort by ``column``; choosing the same column again reverses it."""
        if column == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column, self.sort_reverse = column, False
        self.show(self._rows)

    def next_sort(self) -> str:
        """Sort by the next column along; return its name."""
        names = self.columns_shown
        now = names.index(self.sort_column) if self.sort_column in names else -1
        column = names[(now + 1) % len(names)]
        self.sort_column, self.sort_reverse = column, False
        self.show(self._rows)
        return column

    def _cells(self, row: TaskRow) -> list[Text]:
        no_color = self.app.no_color
        attempts = str(row.attempts)
        if row.max_attempts:
            attempts += f"/{row.max_attempts}"
        finished = (
            formatting.clock(row.finished_at, self._tz)
            if row.finished_at
            else formatting.MISSING
        )
        style = formatting.paint(_STATE_STYLES.get(row.state, ""), no_color=no_color)
        cells = {
            "task": Text(formatting.short_id(row.task_id)),
            "status": Text(row.state, style=style),
            "priority": Text(row.priority),
            "category": Text(row.category),
            "attempts": Text(attempts, justify="right"),
            "worker": Text(formatting.tail(row.worker, 18)),
            "query": Text(
                " ".join(row.query.split())[:200], no_wrap=True, overflow="ellipsis"
            ),
            "finished": Text(finished),
            "reason": Text(
                " ".join(row.reason.split())[:200], no_wrap=True, overflow="ellipsis"
            ),
        }
        return [cells[name] for name in self.columns_shown]
