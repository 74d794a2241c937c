"""The one-line prompt at the bottom: ``:`` commands and ``/`` filters."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Input, Label

PLACEHOLDERS = {
    "command": "overview, tasks, dead, workers, pause [P], resume [P], drain, help",
    "filter": "text, priority:P, status:S, category:C; escape clears",
}
SIGNS = {"command": ":", "filter": "/"}


class CommandLine(Horizontal):
    """Hidden until opened; enter submits, escape cancels and hides it."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", show=False)]

    class Submitted(Message):
        """The operator pressed enter on the line."""

        def __init__(self, mode: str, value: str) -> None:
            super().__init__()
            self.mode = mode
            self.value = value

    class Changed(Message):
        """The text changed while the line is open."""

        def __init__(self, mode: str, value: str) -> None:
            super().__init__()
            self.mode = mode
            self.value = value

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, CommandLine.Changed)

    class Cancelled(Message):
        """Escape closed the line."""

        def __init__(self, mode: str) -> None:
            super().__init__()
            self.mode = mode

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.mode = "command"
        self.display = False

    def compose(self) -> ComposeResult:
        yield Label(":", id="sign")
        yield Input(compact=True, select_on_focus=False, id="line")

    @property
    def is_open(self) -> bool:
        return bool(self.display)

    def open(self, mode: str, value: str = "") -> None:
        """Show the line for ``mode`` (command or filter) and focus it."""
        self.mode = mode
        self.query_one("#sign", Label).update(SIGNS[mode])
        line = self.query_one("#line", Input)
        line.placeholder = PLACEHOLDERS[mode]
        with line.prevent(Input.Changed):
            line.value = value
        line.cursor_position = len(value)
        self.display = True
        # Focus now, not on the next message: keys typed fast (or pasted, or
        # sent in one burst by a browser) must land in the line, not in the
        # view's bindings.
        self.screen.set_focus(line)

    def close(self) -> None:
        self.display = False
        self.screen.focus_next()

    @on(Input.Submitted, "#line")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        mode = self.mode
        self.close()
        self.post_message(self.Submitted(mode, event.value.strip()))

    @on(Input.Changed, "#line")
    def _changed(self, event: Input.Changed) -> None:
        event.stop()
        if self.display:
            self.post_message(self.Changed(self.mode, event.value))

    def action_cancel(self) -> None:
        mode = self.mode
        self.close()
        self.post_message(self.Cancelled(mode))
