"""The overview: the live picture of the system and the operator's keys."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import DataTable

from cortex_core.snapshot import Header, Snapshot
from cortex_tui import formatting
from cortex_tui.screens.api import ApiScreen
from cortex_tui.screens.confirm import ConfirmScreen
from cortex_tui.screens.enqueue import EnqueueScreen
from cortex_tui.screens.view import ViewScreen, log_matches
from cortex_tui.widgets.log import TaskLog
from cortex_tui.widgets.queues import QueuePanel
from cortex_tui.widgets.tokens import TokenGraph
from cortex_tui.widgets.workers import WorkerTable

LOG_LIMIT = 200
"""Log entries asked for per snapshot: the log draws no more than these."""

GONE = frozenset({"exited", "missing"})
"""Worker states that do not count as a running worker."""


class DashboardScreen(ViewScreen):
    """Header, queues, token graph, workers and task log, refreshed on a timer."""

    BINDINGS = [
        Binding("n", "enqueue", "Enqueue", tooltip="Enqueue tasks (opens a form)"),
        Binding(
            "r", "requeue", "Requeue", tooltip="Requeue the task selected in the log"
        ),
        Binding(
            "plus", "scale(1)", "Add worker", key_display="+", tooltip="Add a worker"
        ),
        Binding(
            "minus",
            "scale(-1)",
            "Remove worker",
            key_display="-",
            tooltip="Remove a worker (asks before going to 0)",
        ),
        Binding(
            "a",
            "api",
            "API",
            tooltip="Model API: alerts, waiting tasks, budget",
            show=False,
        ),
        Binding(
            "u",
            "release_pin",
            "Release pin",
            tooltip="Hand the worker count back to the autoscaler (cluster mode)",
        ),
    ]
    CHANGES = ViewScreen.CHANGES | {"enqueue", "requeue", "scale", "release_pin"}
    AUTO_FOCUS = "#log"
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]
    VIEW = "overview"
    LOG_LIMIT = LOG_LIMIT

    class Scaled(Message):
        """The backend accepted a new desired worker count."""

        def __init__(self, desired: int) -> None:
            super().__init__()
            self.desired = desired

    _scaling = 0
    """Sum of the scale requests sent but not answered yet."""

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="top"):
            yield QueuePanel(id="queues")
            yield TokenGraph(id="tokens")
        yield WorkerTable(
            id="workers", cluster=self._control.header.kube_context is not None
        )
        yield TaskLog(tz=self._tz, id="log")

    def show_snapshot(self, snapshot: Snapshot, page: object) -> None:
        self.query_one(QueuePanel).depths = snapshot.queues
        self.query_one(TokenGraph).series = snapshot.tokens
        table = self.query_one(WorkerTable)
        table.now = snapshot.taken_at
        table.worker_rows = tuple(snapshot.workers)
        self._show_log()

    def filter_changed(self, text: str) -> None:
        self.set_filter(text, quiet=True)
        self._show_log()

    def filter_submitted(self, text: str) -> None:
        self.set_filter(text)
        self._show_log()

    @on(Scaled)
    def _scaled(self, message: Scaled) -> None:
        self._scaled_to(message.desired)

    @on(DataTable.RowSelected, "#log")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        task_id = self.query_one(TaskLog).selected_task_id
        if task_id is not None:
            self.open_detail(task_id)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The pin release shows only while an autoscaler's count is pinned."""
        if action == "release_pin" and self._pinned_header() is None:
            return False
        return super().check_action(action, parameters)

    def action_api(self) -> None:
        self.app.push_screen(ApiScreen(self._control, tz=self._tz))

    def action_release_pin(self) -> None:
        header = self._pinned_header()
        if header is None:
            return
        self.app.push_screen(
            ConfirmScreen(
                f"Release the pin at {header.pinned} workers? "
                "The autoscaler sets the count again.",
                yes="Release",
            ),
            lambda yes: self._release_pin() if yes else None,
        )

    def action_enqueue(self) -> None:
        self.app.push_screen(EnqueueScreen(self._control), self._enqueued)

    def action_requeue(self) -> None:
        task_id = self.query_one(TaskLog).selected_task_id
        if task_id is None:
            self.notify("Select a task in the log first.", severity="warning")
            return
        self.act(
            lambda: self._control.requeue(task_id),
            f"Requeued {formatting.short_id(task_id)}",
        )

    def action_scale(self, delta: int) -> None:
        header = self._last.header if self._last is not None else None
        if (
            header is not None
            and header.autoscaler not in (None, "none")
            and header.pinned is None
        ):
            target = (self._desired or 0) + self._scaling + delta
            self.app.push_screen(
                ConfirmScreen(
                    f"The autoscaler {header.autoscaler} owns the worker count. "
                    f"Pin it at {max(0, target)}? (u releases the pin)",
                    yes="Pin",
                ),
                lambda yes: self._scale_confirmed(delta, target) if yes else None,
            )
            return
        known = self._desired
        if known is None and self._last is not None:
            known = sum(w.state not in GONE for w in self._last.workers)
        if known is None and delta < 0:
            question = "The worker count is not known yet. Remove a worker anyway?"
        elif known is not None and known + self._scaling + delta <= 0:
            question = "Scale to 0 workers? Pending tasks wait until a worker returns."
        else:
            self._start_scale(delta)
            return
        self.app.push_screen(
            ConfirmScreen(question, yes="Remove"),
            lambda yes: self._start_scale(delta) if yes else None,
        )

    def _pinned_header(self) -> Header | None:
        header = self._last.header if self._last is not None else None
        header = header or self._control.header
        return header if header.pinned is not None else None

    def _scale_confirmed(self, delta: int, target: int) -> None:
        if target > 0:
            self._start_scale(delta)
            return
        self.app.push_screen(
            ConfirmScreen(
                "Scale to 0 workers? Pending tasks wait until a worker returns.",
                yes="Remove",
            ),
            lambda yes: self._start_scale(delta) if yes else None,
        )

    def _release_pin(self) -> None:
        self.act(
            self._control.release_pin,
            lambda owner: f"Released: the worker count belongs to {owner}",
        )

    def _show_log(self) -> None:
        entries = self._last.log if self._last else ()
        chosen = self.task_filter
        self.query_one(TaskLog).entries = tuple(
            e for e in entries if log_matches(chosen, e)
        )

    def _start_scale(self, delta: int) -> None:
        self._scaling += delta
        self._scale(delta)

    def _enqueued(self, task_ids: list[str] | None) -> None:
        if not task_ids:
            return
        shown = formatting.short_id(task_ids[0])
        if len(task_ids) > 1:
            shown += f" … {formatting.short_id(task_ids[-1])}"
        noun = "task" if len(task_ids) == 1 else "tasks"
        self.notify(f"Enqueued {len(task_ids)} {noun} ({shown})", markup=False)

    def _scale(self, delta: int) -> None:
        def settled(desired: object) -> None:
            if isinstance(desired, int):
                self.post_message(self.Scaled(desired))

        async def call() -> int:
            try:
                return await self._control.scale(delta)
            finally:
                self._scaling -= delta

        self.act(call, _scaling_text, then=settled, poll=False)


def _scaling_text(desired: object) -> str:
    noun = "worker" if desired == 1 else "workers"
    return f"Scaling to {desired} {noun}"
