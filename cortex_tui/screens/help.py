"""Every key the console answers to, and what it does."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, Static


class HelpScreen(ModalScreen[None]):
    """A list of keys and what they do; escape or ? closes it."""

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("question_mark", "close", "Close", show=False),
    ]

    def __init__(self, keys: Sequence[tuple[str, str]]) -> None:
        super().__init__(classes="dialog")
        self._keys = tuple(keys)

    def compose(self) -> ComposeResult:
        width = max(len(key) for key, _ in self._keys)
        lines = [
            Content.assemble((key.rjust(width), "bold"), "  ", what)
            for key, what in self._keys
        ]
        with Vertical(id="help", classes="dialog-box"):
            yield Label("Keys", classes="dialog-title")
            yield Static(Content("\n").join(lines), id="keys")
            yield Label("escape closes this help", classes="hint")
        yield Footer()

    def action_close(self) -> None:
        self.dismiss(None)
