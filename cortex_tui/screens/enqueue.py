"""The form that puts new tasks on the queue."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.events import Resize
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, Select, Static

from cortex_core.errors import CortexError, TaskValidationError
from cortex_core.models import KNOWN_CATEGORIES, PRIORITIES, Priority, Task
from cortex_core.snapshot import Control

MAX_COUNT = 1000
"""Most copies of one task a single submit may enqueue."""

COMPACT_HEIGHT = 30
"""Shorter terminals get the borderless, one-line form fields."""

ANOTHER = "<another>"
"""The category choice that means: use the name typed next to it."""


@dataclass(frozen=True)
class EnqueueRequest:
    """A checked form: what to pass to ``Control.enqueue``."""

    query: str
    category: str
    priority: Priority
    count: int


def check_request(
    query: str, category: str, priority: Priority, count_text: str
) -> EnqueueRequest:
    """Validate the form the way the system will; raise TaskValidationError.

    The message lists every broken field as ``field: rule``, joined by ``; ``.
    """
    problems: list[str] = []
    try:
        Task.create(query=query, category=category, priority=priority)
    except TaskValidationError as err:
        problems.append(str(err))
    try:
        count = int(count_text.strip())
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_COUNT:
        problems.append(f"count: a whole number from 1 to {MAX_COUNT}")
    if problems:
        raise TaskValidationError("; ".join(problems))
    return EnqueueRequest(query, category, priority, count)


class EnqueueScreen(ModalScreen[list[str] | None]):
    """Query, category, priority and count; dismisses with the new task ids."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    class Done(Message):
        """The system took the tasks."""

        def __init__(self, task_ids: list[str]) -> None:
            super().__init__()
            self.task_ids = task_ids

    class Failed(Message):
        """The system refused the tasks or could not be reached."""

        def __init__(self, problem: str) -> None:
            super().__init__()
            self.problem = problem

    def __init__(self, control: Control) -> None:
        super().__init__(classes="dialog")
        self._control = control

    def compose(self) -> ComposeResult:
        categories = [(name, name) for name in KNOWN_CATEGORIES]
        categories.append(("another name…", ANOTHER))
        with Vertical(id="enqueue", classes="dialog-box"):
            yield Label("Enqueue tasks", classes="dialog-title")
            yield Label("Query")
            yield Input(placeholder="What should the agent find out?", id="query")
            with Grid(id="fields"):
                yield Label("Category")
                yield Label("Priority")
                yield Select(
                    categories,
                    value=KNOWN_CATEGORIES[0],
                    allow_blank=False,
                    id="category",
                )
                yield Select(
                    [(p.value, p) for p in PRIORITIES],
                    value=Priority.MEDIUM,
                    allow_blank=False,
                    id="priority",
                )
                yield Label("Another category")
                yield Label(f"Count (1 to {MAX_COUNT})")
                yield Input(placeholder="lowercase name", id="other", disabled=True)
                yield Input("1", type="integer", id="count")
            yield Static("", id="form-error", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Enqueue", id="submit", variant="primary")
                yield Button("Cancel", id="cancel")
        yield Footer()

    def on_resize(self, event: Resize) -> None:
        compact = event.size.height < COMPACT_HEIGHT
        self.set_class(compact, "-compact")
        for field in self.query(Input):
            field.compact = compact
        for choice in self.query(Select):
            choice.compact = compact
        for button in self.query(Button):
            button.compact = compact

    @on(Select.Changed, "#category")
    def _category_changed(self, event: Select.Changed) -> None:
        other = self.query_one("#other", Input)
        other.disabled = event.value != ANOTHER
        if not other.disabled:
            other.focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#submit")
    def _submit(self) -> None:
        if self.query_one("#submit", Button).disabled:
            return  # the last submit is still on its way
        category = self.query_one("#category", Select).value
        if category == ANOTHER:
            category = self.query_one("#other", Input).value.strip()
        priority = self.query_one("#priority", Select).value
        try:
            request = check_request(
                query=self.query_one("#query", Input).value,
                category=str(category),
                priority=Priority(str(priority)),
                count_text=self.query_one("#count", Input).value,
            )
        except TaskValidationError as err:
            self._show_problem(str(err))
            return
        self._show_problem("")
        self._set_busy(True)
        self._enqueue(request)

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.dismiss(None)

    @on(Done)
    def _done(self, message: Done) -> None:
        self.dismiss(message.task_ids)

    @on(Failed)
    def _failed(self, message: Failed) -> None:
        self._set_busy(False)
        self._show_problem(message.problem)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def _show_problem(self, problem: str) -> None:
        """Write the problem under the form and mark the fields it names."""
        error = self.query_one("#form-error", Static)
        error.update(problem.replace("; ", "\n"))
        error.display = bool(problem)
        named = {part.partition(":")[0].strip() for part in problem.split("; ")}
        fields = {"query": "#query", "category": "#other", "count": "#count"}
        if self.query_one("#category", Select).value != ANOTHER:
            fields["category"] = "#category"
        first = None
        for field, selector in fields.items():
            widget = self.query_one(selector)
            widget.set_class(field in named, "-invalid")
            if field in named and first is None:
                first = widget
        if first is not None:
            first.focus()

    def _set_busy(self, busy: bool) -> None:
        button = self.query_one("#submit", Button)
        button.disabled = busy
        button.label = "Enqueueing…" if busy else "Enqueue"

    @work(group="enqueue", exclusive=True)
    async def _enqueue(self, request: EnqueueRequest) -> None:
        try:
            task_ids = await self._control.enqueue(
                request.query, request.category, request.priority, request.count
            )
        except CortexError as err:
            self.post_message(self.Failed(str(err)))
        except Exception as err:  # any failure of the backend ends up on the form
            self.post_message(self.Failed(f"{type(err).__name__}: {err}"))
        else:
            self.post_message(self.Done(task_ids))
