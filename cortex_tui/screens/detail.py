"""Everything about one task: query, history, attempts, tokens, result.

The screen draws whatever sections :data:`SECTIONS` makes of a
:class:`TaskDetail`; a section with nothing to say is left out, so a new kind
of information is one more function in that list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import tzinfo

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Footer, Label, Static

from cortex_core.snapshot import Control, TaskDetail
from cortex_tui import conversation, formatting


@dataclass(frozen=True)
class Section:
    """A titled block of the detail screen."""

    title: str
    body: Content


SectionMaker = Callable[[TaskDetail, "tzinfo | None"], "Section | None"]


def summary(detail: TaskDetail, tz: tzinfo | None) -> Section:
    row = detail.row
    attempts = f"{row.attempts}"
    if row.max_attempts:
        attempts += f" of {row.max_attempts}"
    pairs = [
        ("id", row.task_id),
        ("status", row.state),
        ("priority", row.priority),
        ("category", row.category),
        ("attempts", attempts),
        ("worker", row.worker or formatting.MISSING),
    ]
    if row.enqueued_at is not None:
        pairs.append(("enqueued", formatting.clock(row.enqueued_at, tz)))
    if row.finished_at is not None:
        pairs.append(("finished", formatting.clock(row.finished_at, tz)))
    width = max(len(label) for label, _ in pairs)
    lines = [
        Content.assemble(label.ljust(width + 2), (value, "bold"))
        for label, value in pairs
    ]
    return Section("Task", Content("\n").join(lines))


def query(detail: TaskDetail, tz: tzinfo | None) -> Section:
    return Section("Query", Content(detail.query))


def last_error(detail: TaskDetail, tz: tzinfo | None) -> Section | None:
    reason = detail.row.reason
    if detail.result is not None and detail.result.error:
        reason = detail.result.error
    return Section("Last error", Content(reason)) if reason else None


def history(detail: TaskDetail, tz: tzinfo | None) -> Section:
    if not detail.history:
        return Section(
            "Status history", Content("no events left in the stream for this task")
        )
    lines = []
    for entry in detail.history:
        parts: list[str | tuple[str, str]] = [
            formatting.clock(entry.at, tz),
            "  ",
            (entry.kind.ljust(11), "bold"),
        ]
        if entry.attempt:
            parts.append(f" attempt {entry.attempt}")
        if entry.worker:
            parts.append(f" on {entry.worker}")
        if entry.detail:
            parts.append(f"  {' '.join(entry.detail.split())}")
        lines.append(Content.assemble(*parts))
    return Section("Status history", Content("\n").join(lines))


def tokens(detail: TaskDetail, tz: tzinfo | None) -> Section | None:
    result = detail.result
    if result is None:
        return None
    model = result.model + (" (SIMULATED)" if result.simulated else "")
    lines = [
        Content.assemble("input   ", (formatting.count(result.input_tokens), "bold")),
        Content.assemble("output  ", (formatting.count(result.output_tokens), "bold")),
        Content.assemble("model   ", (model, "bold")),
    ]
    if result.finished_at and result.started_at:
        took = result.finished_at - result.started_at
        lines.append(Content.assemble("took    ", (f"{took:.1f}s", "bold")))
    return Section("Tokens", Content("\n").join(lines))


def model_usage(detail: TaskDetail, tz: tzinfo | None) -> Section | None:
    """Tokens in, out and cached, calls, attempt and waits of a real model."""
    result = detail.result
    if result is None or result.simulated:
        return None
    return Section("Model usage", conversation.usage_block(result))


def conversation_section(detail: TaskDetail, tz: tzinfo | None) -> Section | None:
    """Tool calls with their arguments, cut results and the model's replies."""
    if detail.result is None:
        return None
    body = conversation.conversation_block(detail.result)
    return Section("Conversation", body) if body is not None else None


def result_text(detail: TaskDetail, tz: tzinfo | None) -> Section | None:
    result = detail.result
    if result is None or not result.output:
        return None
    return Section("Result", Content(result.output))


def audit(detail: TaskDetail, tz: tzinfo | None) -> Section:
    files = "\n".join(detail.audit_files) or "no audit record found on this machine"
    return Section("Audit files", Content(files))


def problem(detail: TaskDetail, tz: tzinfo | None) -> Section | None:
    if not detail.problem:
        return None
    return Section("Unreadable record", Content(detail.problem))


SECTIONS: list[SectionMaker] = [
    summary,
    problem,
    query,
    last_error,
    history,
    tokens,
    model_usage,
    conversation_section,
    result_text,
    audit,
]
"""The sections of the detail screen, top to bottom."""


class TaskDetailScreen(Screen[None]):
    """One task, read once when opened (``g`` reads it again); the body
    scrolls with the arrow and page keys."""

    BINDINGS = [
        Binding("escape", "close", "Back", tooltip="Back to the list"),
        Binding("g", "reload", "Reload", tooltip="Read the task again"),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
    ]

    def __init__(self, control: Control, task_id: str, *, tz: tzinfo | None) -> None:
        super().__init__()
        self._control = control
        self.task_id = task_id
        self._tz = tz
        self.detail: TaskDetail | None = None

    def compose(self) -> ComposeResult:
        yield Label(f"Task {self.task_id}", id="detail-title", classes="dialog-title")
        with VerticalScroll(id="detail"):
            yield Static("reading the task…", id="detail-body")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#detail").focus()
        self._load()

    def action_close(self) -> None:
        self.dismiss(None)

    def action_reload(self) -> None:
        self._load()

    def action_page(self, direction: int) -> None:
        scroll = self.query_one("#detail", VerticalScroll)
        if direction > 0:
            scroll.scroll_page_down(animate=False)
        else:
            scroll.scroll_page_up(animate=False)

    @work(group="detail", exclusive=True)
    async def _load(self) -> None:
        body = self.query_one("#detail-body", Static)
        try:
            detail = await self._control.task_detail(self.task_id)
        except Exception as err:  # the screen says why; escape still closes it
            body.update(Content(f"the task could not be read: {err}"))
            return
        self.detail = detail
        body.update(render_detail(detail, self._tz))


def render_detail(detail: TaskDetail, tz: tzinfo | None) -> Content:
    """Every section that has something to say, one after the other."""
    blocks: list[Content] = []
    for make in SECTIONS:
        section = make(detail, tz)
        if section is not None:
            title = Content.styled(section.title, "bold underline")
            blocks.append(Content("\n").join([title, section.body]))
    return Content("\n\n").join(blocks)
