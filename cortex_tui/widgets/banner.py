"""A strip that says what is wrong with the picture, hidden when nothing is."""

from __future__ import annotations

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget


class Banner(Widget):
    """The connection problem, if any, and notices the system sends along."""

    problem: reactive[str] = reactive("")
    """Why the picture is stale; empty when the last refresh worked."""
    notices: reactive[tuple[str, ...]] = reactive(())
    """Short remarks from the snapshot, shown on one line below the problem."""

    def watch_problem(self) -> None:
        self._show_if_needed()

    def watch_notices(self) -> None:
        self._show_if_needed()

    def render(self) -> Content:
        lines = []
        if self.problem:
            lines.append(Content.assemble((self.problem, "bold")))
        if self.notices:
            lines.append(Content(" · ".join(self.notices)))
        return Content("\n").join(lines)

    def _show_if_needed(self) -> None:
        self.display = bool(self.problem or self.notices)
        self.set_class(bool(self.problem), "-problem")
