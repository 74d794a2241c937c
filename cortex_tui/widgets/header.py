"""The top line: which system the console looks at and how it is set up."""

from __future__ import annotations

from textual.content import Content
from textual.geometry import Size
from textual.reactive import reactive
from textual.widget import Widget

from cortex_core.models import PRIORITIES
from cortex_core.snapshot import Header
from cortex_tui import formatting

_GAP = "  "


class HeaderBar(Widget):
    """SIMULATED if so, then mode, Redis, namespace, backend, workers, limit.

    Each label stays with its value: a narrow terminal wraps between pairs.
    """

    header: reactive[Header | None] = reactive(None, layout=True)
    """What the target says about itself; None until it is known."""
    paused: reactive[frozenset[str]] = reactive(frozenset(), layout=True)
    """Pauses in force: ``all``, ``drain`` or priority names."""
    read_only: reactive[bool] = reactive(False, layout=True)
    """The console changes nothing; the header says so."""

    def render(self) -> Content:
        return Content("\n").join(self._lines(self.content_region.width))

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self._lines(width))

    def _pairs(self) -> list[Content]:
        header = self.header
        if header is None:
            return [Content("connecting…")]
        desired = header.desired_workers
        pairs: list[Content] = []
        if header.simulated:
            pairs.append(Content.styled(" SIMULATED ", "bold reverse"))
        if self.read_only:
            pairs.append(Content.styled(" READ-ONLY ", "bold reverse"))
        pause = pause_text(self.paused)
        if pause:
            pairs.append(Content.styled(f" {pause} ", "bold reverse"))
        for label, value in (
            ("mode", header.mode),
            ("redis", header.redis),
            ("ns", header.namespace),
            ("backend", header.backend),
            ("workers", formatting.MISSING if desired is None else str(desired)),
            ("limit", formatting.token_limit(header.token_limit)),
        ):
            pairs.append(Content.assemble(f"{label} ", (value, "bold")))
        if header.kube_context is not None:
            # Cluster mode: where the worker Deployment is and who owns its count.
            owner = header.autoscaler or "none"
            if header.pinned is not None:
                owner += " (u releases)"
            for label, value in (
                ("context", header.kube_context),
                ("kube ns", header.kube_namespace or formatting.MISSING),
                ("autoscaler", owner),
            ):
                pairs.append(Content.assemble(f"{label} ", (value, "bold")))
        return pairs

    def _lines(self, width: int) -> list[Content]:
        """The pairs, as many to a line as fit in ``width`` cells."""
        lines: list[Content] = []
        line = Content()
        for pair in self._pairs():
            if line and line.cell_length + len(_GAP) + pair.cell_length > width:
                lines.append(line)
                line = Content()
            line = line + _GAP + pair if line else pair
        lines.append(line)
        return lines


def pause_text(paused: frozenset[str]) -> str:
    """``DRAINING``, ``PAUSED all`` or ``PAUSED high,low``; empty if none."""
    if "drain" in paused:
        return "DRAINING"
    if "all" in paused:
        return "PAUSED all"
    levels = [p.value for p in PRIORITIES if p.value in paused]
    return f"PAUSED {','.join(levels)}" if levels else ""
