"""Pending tasks per priority with the oldest wait, in flight, dead-lettered,
and pauses."""

from __future__ import annotations

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

from cortex_core.alerts import age_text
from cortex_core.models import PRIORITIES
from cortex_core.snapshot import QueueDepths
from cortex_tui import formatting

_LABEL_WIDTH = 11
_NUMBER_WIDTH = 8


class QueuePanel(Widget):
    """One line per priority (count, oldest wait, pause), then in-flight and
    dead-letter counts."""

    depths: reactive[QueueDepths | None] = reactive(None)
    """The latest depths; None until the first snapshot."""

    def watch_depths(self, depths: QueueDepths | None) -> None:
        paused_all = depths is not None and "all" in depths.paused
        self.border_title = "Queues (all paused)" if paused_all else "Queues"

    def render(self) -> Content:
        depths = self.depths
        if depths is None:
            return Content("waiting for the first snapshot…")
        lines = []
        for priority in PRIORITIES:
            paused = "all" in depths.paused or priority.value in depths.paused
            age = depths.oldest.get(priority)
            lines.append(
                self._line(
                    priority.value,
                    depths.pending.get(priority, 0),
                    age="" if age is None else age_text(age),
                    paused=paused,
                )
            )
        lines.append(self._line("in flight", depths.in_flight))
        lines.append(self._line("dead-letter", depths.dead, alarm=depths.dead > 0))
        return Content("\n").join(lines)

    def _line(
        self,
        label: str,
        value: int,
        *,
        age: str = "",
        paused: bool = False,
        alarm: bool = False,
    ) -> Content:
        number = formatting.count(value).rjust(_NUMBER_WIDTH)
        parts: list[str | tuple[str, str]] = [
            label.ljust(_LABEL_WIDTH),
            (number, "bold $error" if alarm and not self.app.no_color else "bold"),
        ]
        if age:
            parts += [" ", (age, "italic")]
        if paused:
            parts += [" ", ("paused", "reverse")]
        return Content.assemble(*parts)
