"""The model API and the shared budget: alerts, a pause a 429 set, tasks that
wait on a limit with their next attempt, what each priority used and waited,
the limits the API reported and result-cache hits."""

from __future__ import annotations

from datetime import tzinfo

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Footer, Label, Static

from cortex_core.apistatus import ApiStatus
from cortex_core.snapshot import Control
from cortex_tui import formatting

REFRESH_SECONDS = 2.0
"""How often the screen reads the status again while it is open."""
SHOWN_TASKS = 20
"""Rate-limited tasks listed; the rest are counted."""


class ApiScreen(Screen[None]):
    """Read from the control on open and every two seconds after."""

    BINDINGS = [Binding("escape", "close", "Back", tooltip="Back to the dashboard")]

    def __init__(self, control: Control, *, tz: tzinfo | None) -> None:
        super().__init__()
        self._control = control
        self._tz = tz

    def compose(self) -> ComposeResult:
        yield Label("Model API and budget", classes="dialog-title")
        with VerticalScroll(id="api"):
            yield Static("reading…", id="api-body")
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(REFRESH_SECONDS, self._load)
        self._load()

    def action_close(self) -> None:
        self.dismiss(None)

    @work(group="api-status", exclusive=True)
    async def _load(self) -> None:
        body = self.query_one("#api-body", Static)
        try:
            snapshot = await self._control.snapshot(log_limit=1)
        except Exception as err:  # shown on the screen; escape still closes it
            body.update(Content(f"the status could not be read: {err}"))
            return
        if snapshot.api is None:
            body.update(Content("no API status in this picture (Redis unreachable?)"))
            return
        body.update(render_status(snapshot.api, snapshot.taken_at, self._tz))


def render_status(status: ApiStatus, now: float, tz: tzinfo | None) -> Content:
    """Every part of the status, one block after the other."""
    blocks = [
        _block("Alerts", _alerts(status, tz)),
        _block("Waiting on a limit", _waiting(status, now, tz)),
        _block("By priority (last day)", _priorities(status)),
        _block("Limits and cache", _limits(status)),
    ]
    return Content("\n\n").join(blocks)


def _block(title: str, lines: list[Content]) -> Content:
    return Content("\n").join([Content.styled(title, "bold underline"), *lines])


def _alerts(status: ApiStatus, tz: tzinfo | None) -> list[Content]:
    if not status.alerts:
        return [Content("none")]
    return [
        Content.assemble((formatting.clock(a.at, tz), "bold"), "  ", a.message)
        for a in status.alerts
    ]


def _waiting(status: ApiStatus, now: float, tz: tzinfo | None) -> list[Content]:
    lines: list[Content] = []
    if status.paused_until is not None:
        lines.append(
            Content.assemble(
                ("every worker paused", "bold red"),
                f" until {formatting.clock(status.paused_until, tz)} "
                "(the API's retry-after)",
            )
        )
    for task in status.rate_limited[:SHOWN_TASKS]:
        lines.append(
            Content.assemble(
                (formatting.short_id(task.task_id), "bold"),
                f"  rate-limited on {task.worker}, next attempt "
                f"{formatting.clock(task.next_attempt, tz)} "
                f"(in {max(0.0, task.next_attempt - now):.0f}s)",
            )
        )
    more = len(status.rate_limited) - SHOWN_TASKS
    if more > 0:
        lines.append(Content(f"and {more} more"))
    return lines or [Content("no task waits")]


def _priorities(status: ApiStatus) -> list[Content]:
    header = f"{'priority':<10}{'calls':>8}{'tokens':>10}{'waits':>8}{'waited':>10}"
    lines = [Content.styled(header, "bold")]
    for name, s in status.priorities.items():
        lines.append(
            Content(
                f"{name:<10}{s.calls:>8,}{formatting.count(s.tokens):>10}"
                f"{s.waits:>8,}{s.waited_seconds:>9.1f}s"
            )
        )
    if len(lines) == 1:
        lines.append(Content("no calls yet"))
    held = f"{status.held_share:.0%} of each limit is held for critical and high"
    lines.append(Content(held))
    return lines


def _limits(status: ApiStatus) -> list[Content]:
    lines = [
        Content(f"API reports {name.replace('_', ' ')}: {formatting.count(v)}")
        for name, v in status.learned_limits.items()
    ]
    if not lines:
        lines.append(Content("no limits reported by the API yet"))
    total = status.cache_hits + status.cache_misses
    lines.append(Content(f"result cache: {status.cache_hits:,} hits of {total:,}"))
    return lines
