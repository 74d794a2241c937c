"""The tasks view and the dead-letter view: a page of a list read through
the control, filtered on the server side, sorted on screen."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Label

from cortex_core.snapshot import Snapshot, TaskPage, TaskRow
from cortex_tui import formatting
from cortex_tui.screens.view import ViewScreen, ask
from cortex_tui.widgets.tasks import COLUMNS, DEAD_COLUMNS, TaskTable

PAGE = 200
"""Tasks read per refresh: the page under the cursor, never the whole list."""


class TaskListScreen(ViewScreen):
    """Running, pending, dead and done tasks, a page at a time."""

    BINDINGS = [
        Binding("enter", "detail", "Detail", tooltip="Open the task under the cursor"),
        Binding("o", "sort", "Sort", tooltip="Sort by the next column", show=False),
        Binding(
            "O", "reverse", "Reverse", tooltip="Reverse the sort order", show=False
        ),
        Binding(
            "right_square_bracket",
            "page(1)",
            "Next page",
            key_display="]",
            tooltip="Next page of the list",
            show=False,
        ),
        Binding(
            "left_square_bracket",
            "page(-1)",
            "Prev page",
            key_display="[",
            tooltip="Previous page of the list",
            show=False,
        ),
        Binding("c", "cancel", "Cancel", tooltip="Cancel the queued task (asks first)"),
    ]
    CHANGES = ViewScreen.CHANGES | {"cancel"}
    AUTO_FOCUS = "#list"
    VIEW = "tasks"
    LIST = "tasks"
    """Which list of the control this view pages through."""
    TITLE = "Tasks"
    COLUMNS: tuple[str, ...] = COLUMNS

    _offset = 0
    """Position in the list of the first task of the page shown."""
    _page: TaskPage | None = None

    def compose_body(self) -> ComposeResult:
        yield Label("", id="list-status")
        yield TaskTable(self.COLUMNS, tz=self._tz, id="list")

    @property
    def table(self) -> TaskTable:
        return self.query_one(TaskTable)

    async def fetch(self) -> object:
        return await self._control.tasks(
            self.LIST, self.task_filter, offset=self._offset, limit=PAGE
        )

    def show_snapshot(self, snapshot: Snapshot, page: object) -> None:
        if isinstance(page, TaskPage):
            self._page = page
            self._show_page()

    def filter_changed(self, text: str) -> None:
        """Narrow the rows on screen at once; the server reads on submit."""
        if self.set_filter(text, quiet=True) and self._page is not None:
            self._show_page()

    def filter_submitted(self, text: str) -> None:
        if self.set_filter(text):
            self._offset = 0
            self.poll()
        self._show_page()

    @on(DataTable.HeaderSelected, "#list")
    def _header_selected(self, event: DataTable.HeaderSelected) -> None:
        self.table.sort_by(str(event.column_key.value))
        self._show_status()

    @on(DataTable.RowSelected, "#list")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_detail()

    def action_detail(self) -> None:
        task_id = self.table.selected_task_id
        if task_id is None:
            self.notify("No task under the cursor.", severity="warning")
            return
        self.open_detail(task_id)

    def action_sort(self) -> None:
        self.table.next_sort()
        self._show_status()

    def action_reverse(self) -> None:
        table = self.table
        table.sort_by(table.sort_column or self.COLUMNS[0])
        if not table.sort_reverse:
            table.sort_by(table.sort_column)
        self._show_status()

    def action_page(self, direction: int) -> None:
        page = self._page
        if page is None:
            return
        if direction > 0:
            if page.offset + page.scanned >= page.total:
                self.notify("This is the last page.", markup=False)
                return
            self._offset = page.offset + page.scanned
        else:
            if page.offset == 0:
                self.notify("This is the first page.", markup=False)
                return
            self._offset = max(0, page.offset - PAGE)
        self.poll()

    def action_cancel(self) -> None:
        row = self._selected_row()
        if row is None:
            return
        if row.state != "pending":
            self.notify(
                f"{formatting.short_id(row.task_id)} is {row.state}: only a queued "
                "task can be cancelled",
                severity="warning",
                markup=False,
            )
            return
        task_id = row.task_id
        short = formatting.short_id(task_id)
        ask(
            self,
            f"Cancel task {short}? It goes to the dead letters as cancelled.",
            "Cancel task",
            lambda: self.act(
                lambda: self._control.cancel(task_id), f"Cancelled {short}"
            ),
        )

    def _selected_row(self) -> TaskRow | None:
        task_id = self.table.selected_task_id
        if task_id is None:
            self.notify("No task under the cursor.", severity="warning")
            return None
        for row in self.table.task_rows:
            if row.task_id == task_id:
                return row
        return None

    def _show_page(self) -> None:
        page = self._page
        if page is None:
            return
        chosen = self.task_filter
        self.table.show([r for r in page.rows if chosen.matches(r)])
        self._show_status()

    def _show_status(self) -> None:
        page = self._page
        parts = [self.TITLE]
        if page is not None:
            first = page.offset + 1 if page.scanned else page.offset
            last = page.offset + page.scanned
            window = (
                f"{formatting.count(first)} to {formatting.count(last)} "
                f"of {formatting.count(page.total)}"
            )
            if not page.exact:
                # The filter is applied to a window of the list, not counted
                # over all of it: say how many of the window matched.
                window = f"{formatting.count(len(page.rows))} matching in {window}"
            parts.append(window)
        if self.filter_text:
            parts.append(f"filter: {self.filter_text}")
        table = self.table
        if table.sort_column:
            arrow = "↓" if table.sort_reverse else "↑"
            parts.append(f"sort: {table.sort_column} {arrow}")
        self.query_one("#list-status", Label).update(" · ".join(parts))


class DeadLetterScreen(TaskListScreen):
    """Dead tasks with their reasons: requeue one, requeue all that match the
    filter, delete one after a question."""

    BINDINGS = [
        Binding("r", "requeue", "Requeue", tooltip="Requeue the task under the cursor"),
        Binding(
            "R",
            "requeue_matching",
            "Requeue all",
            tooltip="Requeue every dead task that matches the filter",
        ),
        Binding("d", "delete", "Delete", tooltip="Delete the task (asks first)"),
    ]
    CHANGES = TaskListScreen.CHANGES | {"requeue", "requeue_matching", "delete"}
    VIEW = "dead"
    LIST = "dead"
    TITLE = "Dead letters"
    COLUMNS = DEAD_COLUMNS

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel":
            return False  # nothing in this list is queued
        return super().check_action(action, parameters)

    def action_requeue(self) -> None:
        row = self._selected_row()
        if row is None:
            return
        task_id = row.task_id
        self.act(
            lambda: self._control.requeue(task_id),
            f"Requeued {formatting.short_id(task_id)}",
        )

    def action_requeue_matching(self) -> None:
        chosen = self.task_filter
        what = f"matching “{self.filter_text}”" if self.filter_text else "(no filter)"
        ask(
            self,
            f"Requeue every dead task {what}?",
            "Requeue all",
            lambda: self.act(
                lambda: self._control.requeue_dead(chosen),
                lambda n: f"Requeued {n} dead tasks",
            ),
        )

    def action_delete(self) -> None:
        row = self._selected_row()
        if row is None:
            return
        task_id = row.task_id
        short = formatting.short_id(task_id)
        ask(
            self,
            f"Delete dead task {short} for good? Its audit files stay on disk.",
            "Delete",
            lambda: self.act(
                lambda: self._control.delete_dead(task_id), f"Deleted {short}"
            ),
        )
