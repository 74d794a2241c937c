"""The task log, newest first, with a cursor that picks a task to act on."""

from __future__ import annotations

from datetime import tzinfo

from rich.style import Style
from rich.text import Text
from textual.events import Resize
from textual.reactive import reactive
from textual.widgets import DataTable
from textual.widgets.data_table import RowDoesNotExist

from cortex_core.snapshot import LogEntry
from cortex_tui import formatting

WORKER_WIDTH = 18
"""Longest worker name shown in the log."""
COMPACT_WIDTH = 100
"""Narrower than this, the log leaves out the category column."""
MIN_DETAIL = 12
"""The detail column never gets narrower than this."""

_COLUMNS = ("time", "kind", "task", "priority", "category", "worker", "detail")
_KIND_STYLES = {
    "done": "green",
    "retry": "yellow",
    "dead": "bold red",
    "expired": "bold red",
    "handed_back": "italic yellow",
    "requeued": "cyan",
}


class TaskLog(DataTable[Text]):
    """Time, kind, task, priority, category, worker and detail of each event.

    Columns are sized to their content and the detail takes the width that is
    left, cut with an ellipsis, so the log never scrolls sideways.
    """

    entries: reactive[tuple[LogEntry, ...]] = reactive((), init=False)
    """The events of the latest snapshot, newest first."""

    def __init__(self, *, tz: tzinfo | None = None, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.border_title = "Task log"
        self._tz = tz
        self._task_ids: dict[str, str] = {}
        self._width = 0

    def watch_entries(self) -> None:
        self._fill()

    def on_resize(self, event: Resize) -> None:
        if event.size.width != self._width:
            self._width = event.size.width
            self._fill()

    @property
    def selected_task_id(self) -> str | None:
        """The task id of the row under the cursor, if there is one."""
        key = self._selected_key()
        return None if key is None else self._task_ids.get(key)

    def _fill(self) -> None:
        """Redraw columns and rows. A cursor on the newest row follows the
        newest entry; one the operator moved down stays on its entry."""
        following = self.cursor_row <= 0
        kept = None if following else self._selected_key()
        names = list(_COLUMNS)
        if self.scrollable_content_region.width < COMPACT_WIDTH:
            names.remove("category")
        rows = [self._cells(entry, names) for entry in self.entries]
        widths = [
            max([len(name), *(row[i].cell_len for row in rows)])
            for i, name in enumerate(names)
        ]
        padding = 2 * self.cell_padding * len(names)
        used = sum(widths[:-1]) + padding
        widths[-1] = max(MIN_DETAIL, self.scrollable_content_region.width - used)
        self.clear(columns=True)
        for name, width in zip(names, widths, strict=True):
            self.add_column(name, width=width, key=name)
        self._task_ids = {}
        for key, entry, cells in zip(
            _row_keys(self.entries), self.entries, rows, strict=True
        ):
            self._task_ids[key] = entry.task_id
            self.add_row(*cells, key=key)
        if kept is not None and kept in self._task_ids:
            self.move_cursor(row=self.get_row_index(kept), scroll=True)
        self.border_title = f"Task log ({len(self.entries)})"

    def _selected_key(self) -> str | None:
        if not self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except RowDoesNotExist:
            return None

    def _cells(self, entry: LogEntry, names: list[str]) -> list[Text]:
        cells = {
            "time": Text(formatting.clock(entry.at, self._tz)),
            "kind": Text(entry.kind, style=self._kind_style(entry.kind)),
            "task": Text(formatting.short_id(entry.task_id)),
            "priority": Text(entry.priority),
            "category": Text(entry.category),
            "worker": Text(formatting.tail(entry.worker, WORKER_WIDTH)),
            "detail": Text(
                " ".join(entry.detail.split()), no_wrap=True, overflow="ellipsis"
            ),
        }
        return [cells[name] for name in names]

    def _kind_style(self, kind: str) -> Style:
        style = _KIND_STYLES.get(kind, "")
        return formatting.paint(style, no_color=self.app.no_color)


def _row_keys(entries: tuple[LogEntry, ...]) -> list[str]:
    """A stable key per entry: its event id, or what it says when it has none."""
    keys: list[str] = []
    seen: set[str] = set()
    for entry in entries:
        base = entry.event_id or f"{entry.at!r}:{entry.kind}:{entry.task_id}"
        key, n = base, 1
        while key in seen:
            n += 1
            key = f"{base}#{n}"
        seen.add(key)
        keys.append(key)
    return keys
