"""Pause and resume consumption (all, or one priority), or drain."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, Static

from cortex_core.models import PRIORITIES

_LEVEL_KEYS = {"critical": "1", "high": "2", "medium": "3", "low": "4"}


class FlowScreen(ModalScreen[str | None]):
    """One key per choice; dismisses with the command that carries it out
    (``pause``, ``resume high``, ``drain``...) or None."""

    BINDINGS = [
        Binding("a", "choose('pause')", "Pause all"),
        Binding("r", "choose('resume')", "Resume all"),
        Binding("d", "choose('drain')", "Drain"),
        Binding("1", "level('critical')", "critical", show=False),
        Binding("2", "level('high')", "high", show=False),
        Binding("3", "level('medium')", "medium", show=False),
        Binding("4", "level('low')", "low", show=False),
        Binding("escape", "choose('')", "Cancel"),
    ]

    def __init__(self, paused: frozenset[str]) -> None:
        super().__init__(classes="dialog")
        self._paused = paused

    def compose(self) -> ComposeResult:
        lines = [
            Content.assemble(("a", "bold"), "  pause all claims"),
            Content.assemble(
                ("r", "bold"), "  resume everything (a drain, every priority)"
            ),
            Content.assemble(
                ("d", "bold"), "  drain: stop claiming everywhere, running tasks end"
            ),
        ]
        for priority in PRIORITIES:
            level = priority.value
            verb = "resume" if level in self._paused else "pause"
            key = _LEVEL_KEYS[level]
            lines.append(Content.assemble((key, "bold"), f"  {verb} {level}"))
        with Vertical(id="flow", classes="dialog-box"):
            yield Label("Flow control", classes="dialog-title")
            yield Static(Content("\n").join(lines), id="choices")
            yield Label("escape cancels", classes="hint")
        yield Footer()

    def action_choose(self, command: str) -> None:
        self.dismiss(command or None)

    def action_level(self, level: str) -> None:
        verb = "resume" if level in self._paused else "pause"
        self.dismiss(f"{verb} {level}")
