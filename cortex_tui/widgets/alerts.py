"""The line under the header that says what needs attention now."""

from __future__ import annotations

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget


class AlertLine(Widget):
    """Alerts of the latest snapshot on one line; hidden when there are none."""

    alerts: reactive[tuple[str, ...]] = reactive(())
    """Short alert texts, most urgent first."""

    def watch_alerts(self, alerts: tuple[str, ...]) -> None:
        self.display = bool(alerts)

    def render(self) -> Content:
        return Content.assemble(("! ", "bold"), " · ".join(self.alerts))
