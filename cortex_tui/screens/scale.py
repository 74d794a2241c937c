"""The worker count: what runs, what is wanted, who owns the number."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Label, Static

from cortex_core.snapshot import Control, ScaleInfo
from cortex_tui import formatting
from cortex_tui.screens.confirm import ConfirmScreen

MAX_WORKERS = 1000
"""The largest count the dialog accepts before the backend has said its own."""


class ScaleScreen(ModalScreen[int | None]):
    """Shows the current and desired counts and the owner; enter sets the
    count typed (0 asks first); dismisses with the chosen count or None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, control: Control) -> None:
        super().__init__(classes="dialog")
        self._control = control
        self._info: ScaleInfo | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="scale", classes="dialog-box"):
            yield Label("Scale workers", classes="dialog-title")
            yield Static("reading the worker count…", id="scale-info")
            yield Input(placeholder="new count", type="integer", id="count")
            yield Label("", id="form-error")
            yield Label("enter sets the count; escape cancels", classes="hint")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#count", Input).focus()
        self._load()

    @work(group="scale-info", exclusive=True)
    async def _load(self) -> None:
        try:
            info = await self._control.scale_info()
        except Exception as err:  # shown in the dialog; the operator may still type
            self.query_one("#scale-info", Static).update(
                Content(f"the count could not be read: {err}")
            )
            return
        self._info = info
        desired = formatting.MISSING if info.desired is None else str(info.desired)
        lines = [
            Content.assemble("running  ", (str(info.current), "bold")),
            Content.assemble("desired  ", (desired, "bold")),
            Content.assemble("owner    ", (info.owner, "bold")),
        ]
        if info.owner.startswith("autoscaler"):
            lines.append(
                Content("a new count pins the autoscaler; u (overview) releases it")
            )
        if not info.can_scale:
            lines.append(Content("this console cannot change the count"))
        self.query_one("#scale-info", Static).update(Content("\n").join(lines))

    @on(Input.Submitted, "#count")
    def _submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        error = self.query_one("#form-error", Label)
        try:
            count = int(text)
        except ValueError:
            count = -1
        most = self._info.maximum if self._info and self._info.maximum else MAX_WORKERS
        if not 0 <= count <= most:
            error.update(f"count: a whole number from 0 to {most}")
            error.display = True
            return
        if count == 0:
            self.app.push_screen(
                ConfirmScreen(
                    "Scale to 0 workers? Pending tasks wait until a worker returns.",
                    yes="Scale to 0",
                ),
                self._zero_answered,
            )
            return
        self.dismiss(count)

    def _zero_answered(self, yes: bool | None) -> None:
        if yes:
            self.dismiss(0)

    def action_cancel(self) -> None:
        self.dismiss(None)
