"""Every key the console answers to, and what it does."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, Static

KEY_WIDTH = 12
"""Widest key column; a longer key gets a line of its own."""


class HelpScreen(ModalScreen[None]):
    """Keys and commands with what they do; it scrolls with the arrow keys;
    escape or ? closes it."""

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("question_mark", "close", "Close", show=False),
    ]

    def __init__(
        self,
        keys: Sequence[tuple[str, str]],
        commands: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(classes="dialog")
        self._keys = tuple(keys)
        self._commands = tuple(commands)

    def compose(self) -> ComposeResult:
        blocks = [_table(self._keys)]
        if self._commands:
            title = Content.styled("Commands after :", "bold underline")
            blocks.append(Content("\n").join([title, _table(self._commands)]))
        with Vertical(id="help", classes="dialog-box"):
            yield Label("Keys", classes="dialog-title")
            with VerticalScroll(id="help-body"):
                yield Static(Content("\n\n").join(blocks), id="keys")
            yield Label("escape closes this help", classes="hint")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#help-body").focus()

    def action_close(self) -> None:
        self.dismiss(None)


def _table(rows: Sequence[tuple[str, str]]) -> Content:
    width = min(KEY_WIDTH, max(len(key) for key, _ in rows))
    lines: list[Content] = []
    for key, what in rows:
        if len(key) > width:
            lines.append(Content.styled(key, "bold"))
            lines.append(Content.assemble(" " * (width + 2), what))
        else:
            lines.append(Content.assemble((key.rjust(width), "bold"), "  ", what))
    return Content("\n").join(lines)
