"""What every view shares: the header and alerts, the refresh loop, the
command line (``:``), the filter line (``/``), flow control and scaling.

A view polls one :class:`Snapshot` (for the header and alerts) plus, for a
list view, one page of its list, in a single background worker that posts
the outcome as a message; only the message handlers touch widgets.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Coroutine
from datetime import tzinfo
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.events import Key
from textual.keys import format_key
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer
from textual.worker import Worker

from cortex_core.errors import CortexError
from cortex_core.models import Priority
from cortex_core.snapshot import Control, Header, LogEntry, Snapshot, TaskFilter
from cortex_tui import formatting
from cortex_tui.screens.confirm import ConfirmScreen
from cortex_tui.screens.flow import FlowScreen
from cortex_tui.screens.help import HelpScreen
from cortex_tui.screens.scale import ScaleScreen
from cortex_tui.widgets.alerts import AlertLine
from cortex_tui.widgets.banner import Banner
from cortex_tui.widgets.commandline import CommandLine
from cortex_tui.widgets.header import HeaderBar

if TYPE_CHECKING:
    from cortex_tui.app import CortexApp

logger = logging.getLogger(__name__)

COMMON_KEYS = (
    ("up / down", "Move the cursor; scroll the detail and this help"),
    ("enter", "Submit a form or a line; open the task under the cursor"),
    ("escape", "Close a line, a form, a question, the detail or this help"),
    ("y / n", "Answer a question"),
    ("tab", "Move between the fields of a form"),
)
"""Keys of dialogs, tables and the command line, listed after the bindings."""

COMMANDS = (
    ("overview", "The dashboard (also :o)"),
    ("tasks", "Every task, a page at a time (also :t)"),
    ("dead", "Dead letters with their reasons (also :d)"),
    ("workers", "Every worker (also :w)"),
    ("pause [P]", "Stop claims of every priority, or of priority P"),
    ("resume [P]", "Resume everything (ends a drain), or priority P"),
    ("drain", "Stop claiming everywhere; running tasks finish"),
    ("scale N", "Set the worker count (0 asks first)"),
    ("target [NAME]", "Watch another configured deployment; alone, list them"),
    ("help", "This help"),
    ("quit", "Leave the console"),
)
"""What the command line understands, for the help screen."""


def describe(err: BaseException) -> str:
    """The message of a cortex error; other errors also say what they are."""
    if isinstance(err, CortexError) and str(err):
        return str(err)
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


class ViewScreen(Screen[None]):
    """A view of the system: subclasses add their body and keys."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("colon", "command", "Command", key_display=":", tooltip="Command line"),
        Binding(
            "slash", "filter", "Filter", key_display="/", tooltip="Filter the list"
        ),
        Binding("p", "flow", "Flow", tooltip="Pause, resume or drain consumption"),
        Binding("s", "scale_dialog", "Scale", tooltip="Set the worker count"),
        Binding(
            "question_mark", "help", "Help", key_display="?", tooltip="Show this help"
        ),
        Binding("q", "app.quit", "Quit", tooltip="Quit the console", show=False),
    ]
    CHANGES: ClassVar[frozenset[str]] = frozenset({"flow", "scale_dialog"})
    """Actions that change the system: hidden and refused when read-only."""
    VIEW = ""
    """The name ``:`` switches to this view with."""
    LOG_LIMIT = 0
    """Log entries asked for per snapshot; only the overview shows the log."""

    class SnapshotTaken(Message):
        """A refresh succeeded; a newer one replaces it if still queued."""

        def __init__(self, snapshot: Snapshot, page: object = None) -> None:
            super().__init__()
            self.snapshot = snapshot
            self.page = page

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, _OUTCOMES)

    class SnapshotFailed(Message):
        """A refresh raised; a newer outcome replaces it if still queued."""

        def __init__(self, problem: str) -> None:
            super().__init__()
            self.problem = problem

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, _OUTCOMES)

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
        self._poller: Worker[None] | None = None
        self.task_filter = TaskFilter()
        """What the view's list shows; every list starts unfiltered."""
        self.filter_text = ""
        self._committed_filter = ""

    @property
    def console(self) -> CortexApp:
        """The app, typed: views only run inside the cortex console."""
        from cortex_tui.app import CortexApp

        app = self.app
        if not isinstance(app, CortexApp):
            raise TypeError("a view runs inside CortexApp")
        return app

    def compose(self) -> ComposeResult:
        yield HeaderBar(id="header")
        yield AlertLine(id="alerts")
        yield Banner(id="banner")
        yield from self.compose_body()
        yield CommandLine(id="prompt")
        yield Footer(compact=True)

    def compose_body(self) -> ComposeResult:
        """The view's own widgets, between the header and the footer."""
        yield from ()

    def on_mount(self) -> None:
        header = self._control.header
        self._desired = header.desired_workers
        bar = self.query_one(HeaderBar)
        bar.header = header
        bar.read_only = self.console.read_only
        self.set_interval(self._refresh_seconds, self.poll)
        self.poll()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (action in self.CHANGES and self.console.read_only)

    def on_key(self, event: Key) -> None:
        """In read-only mode a key of a hidden action is refused out loud."""
        if not self.console.read_only:
            return
        for binding in self._bindings_in_order():
            action = binding.action.partition("(")[0]
            if binding.key == event.key and action in self.CHANGES:
                event.stop()
                event.prevent_default()
                self.notify(
                    f"read-only mode: {binding.description.lower()} is not allowed",
                    severity="warning",
                    markup=False,
                )
                return

    @on(SnapshotTaken)
    def _snapshot_taken(self, message: SnapshotTaken) -> None:
        snapshot = message.snapshot
        self._last = snapshot
        if snapshot.error is None:
            self._good_at = snapshot.taken_at
        if snapshot.header.desired_workers is not None:
            self._desired = snapshot.header.desired_workers
        self.show_header(snapshot.header)
        self.query_one(HeaderBar).paused = snapshot.queues.paused
        self.query_one(AlertLine).alerts = tuple(snapshot.alerts)
        banner = self.query_one(Banner)
        banner.problem = self._problem_text(snapshot.error) if snapshot.error else ""
        banner.notices = tuple(snapshot.notices)
        self.show_snapshot(snapshot, message.page)

    @on(SnapshotFailed)
    def _snapshot_failed(self, message: SnapshotFailed) -> None:
        self.query_one(Banner).problem = self._problem_text(message.problem)
        self.query_one(AlertLine).alerts = ("Redis reconnecting",)

    @on(CommandLine.Submitted)
    def _line_submitted(self, message: CommandLine.Submitted) -> None:
        if message.mode == "command":
            self.console.run_command(message.value)
            return
        try:
            TaskFilter.parse(message.value)
        except ValueError as err:
            # What was typed is refused: the filter before the line opened holds.
            self.notify(str(err), severity="error", markup=False)
            self.filter_submitted(self._committed_filter)
        else:
            self.filter_submitted(message.value)

    @on(CommandLine.Changed)
    def _line_changed(self, message: CommandLine.Changed) -> None:
        if message.mode == "filter":
            self.filter_changed(message.value)

    @on(CommandLine.Cancelled)
    def _line_cancelled(self, message: CommandLine.Cancelled) -> None:
        if message.mode == "filter":
            self.filter_changed("")
            self.filter_submitted("")

    def action_command(self) -> None:
        self.query_one(CommandLine).open("command")

    def action_filter(self) -> None:
        self._committed_filter = self.filter_text
        self.query_one(CommandLine).open("filter", self.filter_text)

    def action_help(self) -> None:
        commands = [
            (name, what)
            for name, what in COMMANDS
            if not (self.console.read_only and name.split()[0] in CHANGE_VERBS)
        ]
        self.app.push_screen(HelpScreen(self.key_help(), commands))

    def action_flow(self) -> None:
        paused = self._last.queues.paused if self._last else frozenset()
        self.app.push_screen(FlowScreen(paused), self._flow_chosen)

    def action_scale_dialog(self) -> None:
        self.app.push_screen(
            ScaleScreen(self._control),
            lambda count: self.scale_to(count) if count is not None else None,
        )

    def scale_to(self, count: int) -> None:
        """Ask the backend for ``count`` workers; show the answer in the header."""

        def settled(desired: object) -> None:
            if isinstance(desired, int):
                self._scaled_to(desired)

        self.act(
            lambda: self._control.scale_to(count),
            lambda n: f"Scaling to {n} worker{'' if n == 1 else 's'}",
            then=settled,
        )

    def show_snapshot(self, snapshot: Snapshot, page: object) -> None:
        """Draw the view's body from a fresh snapshot and page."""

    def filter_changed(self, text: str) -> None:
        """The filter line changed; list views narrow as the operator types."""

    def filter_submitted(self, text: str) -> None:
        """The filter line was submitted (or cleared, with an empty text)."""

    async def fetch(self) -> object:
        """The view's own data for one refresh, read in the background."""
        return None

    def set_filter(self, text: str, *, quiet: bool = False) -> bool:
        """Take the filter ``text``; a bad one is shown (unless ``quiet``, while
        the operator types) and leaves the filter as it was."""
        try:
            parsed = TaskFilter.parse(text)
        except ValueError as err:
            if not quiet:
                self.notify(str(err), severity="error", markup=False)
            return False
        self.task_filter = parsed
        self.filter_text = text
        return True

    def open_detail(self, task_id: str) -> None:
        """Show everything about one task over this view."""
        from cortex_tui.screens.detail import TaskDetailScreen

        self.app.push_screen(TaskDetailScreen(self._control, task_id, tz=self._tz))

    def key_help(self) -> list[tuple[str, str]]:
        """Every key of this view with what it does, for the help screen."""
        keys = [
            (
                binding.key_display or format_key(binding.key),
                binding.tooltip or binding.description,
            )
            for binding in self._bindings_in_order()
            if self.check_action(binding.action.partition("(")[0], ())
        ]
        return keys + list(COMMON_KEYS)

    def poll(self) -> None:
        """Start a refresh unless the last one is still waiting for its answer.

        A slow Redis thus gets the whole timeout instead of being cancelled by
        the next tick; ``exclusive`` still guarantees one poll at a time.
        """
        if self._poller is None or self._poller.is_finished:
            self._poller = self._poll()

    def show_header(self, header: Header) -> None:
        self.query_one(HeaderBar).header = dataclasses.replace(
            header, desired_workers=self._desired
        )

    def act(
        self,
        call: Callable[[], Coroutine[Any, Any, object]],
        done: str | Callable[[object], str],
        then: Callable[[object], None] | None = None,
        *,
        poll: bool = True,
    ) -> None:
        """Run one change in the background; notify ``done`` (a text, or made
        from the result) or the refusal; refresh afterwards if ``poll``."""
        self._act(call, done, then, poll)

    def _bindings_in_order(self) -> list[Binding]:
        seen: set[str] = set()
        out: list[Binding] = []
        for cls in type(self).__mro__:
            if not cls.__module__.startswith("cortex_tui."):
                continue
            for binding in cls.__dict__.get("BINDINGS", ()):
                if isinstance(binding, Binding) and binding.key not in seen:
                    seen.add(binding.key)
                    out.append(binding)
        return out

    def _problem_text(self, problem: str) -> str:
        if not problem.lower().startswith("redis"):
            problem = f"Redis unreachable: {problem}"
        text = f"{problem} — retrying"
        if self._good_at is not None:
            text += f" (showing {formatting.clock(self._good_at, self._tz)})"
        return text

    def _flow_chosen(self, choice: str | None) -> None:
        if choice:
            self.console.run_command(choice)

    def _scaled_to(self, desired: int | None) -> None:
        if desired is not None:
            self._desired = desired
            header = self.query_one(HeaderBar).header
            if header is not None:
                self.show_header(header)

    @work(group="poll", exclusive=True)
    async def _poll(self) -> None:
        try:
            snapshot, page = await asyncio.wait_for(self._read(), self._timeout)
        except TimeoutError:
            self.post_message(
                self.SnapshotFailed(f"no answer within {self._timeout:g}s")
            )
        except Exception as err:  # every failure becomes the banner, not a crash
            logger.info("snapshot failed: %s", err)
            self.post_message(self.SnapshotFailed(describe(err)))
        else:
            self.post_message(self.SnapshotTaken(snapshot, page))

    async def _read(self) -> tuple[Snapshot, object]:
        snapshot = await self._control.snapshot(self.LOG_LIMIT)
        return snapshot, await self.fetch()

    @work(group="change")
    async def _act(
        self,
        call: Callable[[], Coroutine[Any, Any, object]],
        done: str | Callable[[object], str],
        then: Callable[[object], None] | None,
        poll: bool,
    ) -> None:
        try:
            result = await call()
        except Exception as err:  # a refusal is shown, the console carries on
            self.notify(describe(err), severity="error", markup=False)
            return
        self.notify(done if isinstance(done, str) else done(result), markup=False)
        if then is not None:
            then(result)
        if poll:
            self.poll()


CHANGE_VERBS = frozenset({"pause", "resume", "drain", "scale"})
"""Commands that change the system: refused in read-only mode."""

_OUTCOMES = (ViewScreen.SnapshotTaken, ViewScreen.SnapshotFailed)


def parse_priority(word: str | None) -> Priority | None:
    """A priority named on the command line; None for all."""
    if word is None or word == "all":
        return None
    try:
        return Priority(word)
    except ValueError:
        names = ", ".join(p.value for p in Priority)
        raise ValueError(f"no priority {word!r}: all, {names}") from None


def ask(screen: Screen[Any], question: str, yes: str, then: Callable[[], None]) -> None:
    """Ask ``question``; run ``then`` only if the operator agrees."""
    screen.app.push_screen(
        ConfirmScreen(question, yes=yes), lambda agreed: then() if agreed else None
    )


def log_matches(task_filter: TaskFilter, entry: LogEntry) -> bool:
    """Whether a log entry passes a filter; ``status:`` names the event kind's
    state (done, dead) or, for claims, running; free text searches its words."""
    if task_filter.priorities and entry.priority not in task_filter.priorities:
        return False
    if task_filter.categories and entry.category not in task_filter.categories:
        return False
    if task_filter.states and _LOG_STATES.get(entry.kind) not in task_filter.states:
        return False
    if task_filter.text:
        haystack = " ".join(
            (entry.kind, entry.task_id, entry.worker, entry.detail)
        ).lower()
        return all(w in haystack for w in task_filter.text.lower().split())
    return True


_LOG_STATES = {
    "enqueued": "pending",
    "requeued": "pending",
    "retry": "pending",
    "expired": "pending",
    "handed_back": "pending",
    "claimed": "running",
    "done": "done",
    "dead": "dead",
}
"""The state a task is in right after each kind of event."""
