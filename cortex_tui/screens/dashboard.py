"""The main screen: the live picture of the system and the operator's keys."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import tzinfo

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.keys import format_key
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer
from textual.worker import Worker

from cortex_core.errors import CortexError
from cortex_core.snapshot import Control, Header, Snapshot
from cortex_tui import formatting
from cortex_tui.screens.confirm import ConfirmScreen
from cortex_tui.screens.enqueue import EnqueueScreen
from cortex_tui.screens.help import HelpScreen
from cortex_tui.widgets.banner import Banner
from cortex_tui.widgets.header import HeaderBar
from cortex_tui.widgets.log import TaskLog
from cortex_tui.widgets.queues import QueuePanel
from cortex_tui.widgets.tokens import TokenGraph
from cortex_tui.widgets.workers import WorkerTable

logger = logging.getLogger(__name__)

LOG_LIMIT = 200
"""Log entries asked for per snapshot."""

GONE = frozenset({"exited", "missing"})
"""Worker states that do not count as a running worker."""

MODAL_KEYS = (
    ("up / down", "Move the task log cursor"),
    ("escape", "Close a form, a question or this help"),
    ("enter", "Submit the enqueue form"),
    ("y / n", "Answer a question"),
)
"""Keys of the dialogs and tables, listed in the help after the bindings."""


class DashboardScreen(Screen[None]):
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
            "question_mark", "help", "Help", key_display="?", tooltip="Show this help"
        ),
        Binding(
            "u",
            "release_pin",
            "Release pin",
            tooltip="Hand the worker count back to the autoscaler (cluster mode)",
        ),
        Binding("q", "app.quit", "Quit", tooltip="Quit the console"),
    ]
    AUTO_FOCUS = "#log"
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]

    class SnapshotTaken(Message):
        """A refresh succeeded; a newer one replaces it if still queued."""

        def __init__(self, snapshot: Snapshot) -> None:
            super().__init__()
            self.snapshot = snapshot

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, (type(self), DashboardScreen.SnapshotFailed))

    class SnapshotFailed(Message):
        """A refresh raised; a newer outcome replaces it if still queued."""

        def __init__(self, problem: str) -> None:
            super().__init__()
            self.problem = problem

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, (type(self), DashboardScreen.SnapshotTaken))

    class Scaled(Message):
        """The backend accepted a new desired worker count."""

        def __init__(self, desired: int) -> None:
            super().__init__()
            self.desired = desired

    def __init__(
        self,
        control: Control,
        *,
        refresh_seconds: float,
        timeout_seconds: float,
        tz: tzinfo | None,
    ) -> None:
        super().__init__()
        self._control = control
        self._refresh_seconds = refresh_seconds
        self._timeout = timeout_seconds
        self._tz = tz
        self._last: Snapshot | None = None
        # When the picture on screen was last taken without an error.
        self._good_at: float | None = None
        self._desired: int | None = None
        # Sum of the scale requests sent but not answered yet.
        self._scaling = 0
        self._poller: Worker[None] | None = None

    def compose(self) -> ComposeResult:
        yield HeaderBar(id="header")
        yield Banner(id="banner")
        with Horizontal(id="top"):
            yield QueuePanel(id="queues")
            yield TokenGraph(id="tokens")
        yield WorkerTable(
            id="workers", cluster=self._control.header.kube_context is not None
        )
        yield TaskLog(tz=self._tz, id="log")
        yield Footer()

    def on_mount(self) -> None:
        header = self._control.header
        self._desired = header.desired_workers
        self.query_one(HeaderBar).header = header
        self.set_interval(self._refresh_seconds, self.poll)
        self.poll()

    @on(SnapshotTaken)
    def _snapshot_taken(self, message: SnapshotTaken) -> None:
        snapshot = message.snapshot
        self._last = snapshot
        if snapshot.error is None:
            self._good_at = snapshot.taken_at
        if snapshot.header.desired_workers is not None:
            self._desired = snapshot.header.desired_workers
        self._show_header(snapshot.header)
        self.query_one(QueuePanel).depths = snapshot.queues
        self.query_one(TokenGraph).series = snapshot.tokens
        table = self.query_one(WorkerTable)
        table.now = snapshot.taken_at
        table.worker_rows = tuple(snapshot.workers)
        self.query_one(TaskLog).entries = tuple(snapshot.log)
        banner = self.query_one(Banner)
        banner.problem = self._problem_text(snapshot.error) if snapshot.error else ""
        banner.notices = tuple(snapshot.notices)

    @on(SnapshotFailed)
    def _snapshot_failed(self, message: SnapshotFailed) -> None:
        self.query_one(Banner).problem = self._problem_text(message.problem)

    @on(Scaled)
    def _scaled(self, message: Scaled) -> None:
        self._desired = message.desired
        header = self.query_one(HeaderBar).header
        if header is not None:
            self._show_header(header)

    def action_enqueue(self) -> None:
        self.app.push_screen(EnqueueScreen(self._control), self._enqueued)

    def action_requeue(self) -> None:
        task_id = self.query_one(TaskLog).selected_task_id
        if task_id is None:
            self.notify("Select a task in the log first.", severity="warning")
            return
        self._requeue(task_id)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The pin release shows only while an autoscaler's count is pinned."""
        if action == "release_pin":
            return self._pinned_header() is not None
        return True

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

    def _pinned_header(self) -> Header | None:
        header = self._last.header if self._last is not None else None
        header = header or self._control.header
        return header if header.pinned is not None else None

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

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(self.key_help()))

    def key_help(self) -> list[tuple[str, str]]:
        """Every key of the console with what it does, for the help screen."""
        keys = [
            (
                binding.key_display or format_key(binding.key),
                binding.tooltip or binding.description,
            )
            for binding in self.BINDINGS
            if isinstance(binding, Binding)
            and (binding.action != "release_pin" or self._cluster)
        ]
        return keys + list(MODAL_KEYS)

    def poll(self) -> None:
        """Start a refresh unless the last one is still waiting for its answer.

        A slow Redis thus gets the whole timeout instead of being cancelled by
        the next tick; ``exclusive`` still guarantees one poll at a time.
        """
        if self._poller is None or self._poller.is_finished:
            self._poller = self._poll()

    def _show_header(self, header: Header) -> None:
        self.query_one(HeaderBar).header = dataclasses.replace(
            header, desired_workers=self._desired
        )

    def _problem_text(self, problem: str) -> str:
        if not problem.lower().startswith("redis"):
            problem = f"Redis unreachable: {problem}"
        text = f"{problem} — retrying"
        if self._good_at is not None:
            text += f" (showing {formatting.clock(self._good_at, self._tz)})"
        return text

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

    @work(group="poll", exclusive=True)
    async def _poll(self) -> None:
        try:
            snapshot = await asyncio.wait_for(
                self._control.snapshot(LOG_LIMIT), self._timeout
            )
        except TimeoutError:
            self.post_message(
                self.SnapshotFailed(f"no answer within {self._timeout:g}s")
            )
        except Exception as err:  # every failure becomes the banner, not a crash
            logger.info("snapshot failed: %s", err)
            self.post_message(self.SnapshotFailed(_describe(err)))
        else:
            self.post_message(self.SnapshotTaken(snapshot))

    @work(group="requeue")
    async def _requeue(self, task_id: str) -> None:
        try:
            await self._control.requeue(task_id)
        except Exception as err:  # a refusal is shown, the console carries on
            self.notify(_describe(err), severity="error", markup=False)
        else:
            self.notify(f"Requeued {formatting.short_id(task_id)}", markup=False)

    @property
    def _cluster(self) -> bool:
        return self._control.header.kube_context is not None

    @work(group="release")
    async def _release_pin(self) -> None:
        try:
            owner = await self._control.release_pin()
        except Exception as err:  # a refusal is shown, the console carries on
            self.notify(_describe(err), severity="error", markup=False)
            return
        self.notify(f"Released: the worker count belongs to {owner}", markup=False)
        self.poll()

    @work(group="scale")
    async def _scale(self, delta: int) -> None:
        try:
            desired = await self._control.scale(delta)
        except Exception as err:  # a refusal is shown, the console carries on
            self.notify(_describe(err), severity="error", markup=False)
            return
        finally:
            self._scaling -= delta
        self.post_message(self.Scaled(desired))
        noun = "worker" if desired == 1 else "workers"
        self.notify(f"Scaling to {desired} {noun}", markup=False)


def _describe(err: BaseException) -> str:
    """The message of a cortex error; other errors also say what they are."""
    if isinstance(err, CortexError) and str(err):
        return str(err)
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
