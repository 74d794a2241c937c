"""A finished task's model conversation and token counts, as text blocks a
detail view can show: tool calls with their arguments, tool results cut to a
few lines, the model's replies, and tokens in, out and cached."""

from __future__ import annotations

from textual.content import Content

from cortex_core.models import TaskResult, TranscriptEntry
from cortex_tui import formatting

RESULT_LINES = 4
"""Lines of a tool result shown; the rest is summarised."""
LINE_WIDTH = 160
"""Longest line shown of any entry."""

_LABELS = {
    "user": "task",
    "assistant": "model",
    "tool_call": "call",
    "tool_result": "result",
    "note": "note",
}


def usage_block(result: TaskResult) -> Content:
    """Model, tokens, calls, attempts and timings of one result."""
    model = result.model + (" (SIMULATED)" if result.simulated else "")
    if result.cached:
        model += ", answered from the result cache"
    took = max(0.0, result.finished_at - result.started_at)
    pairs = [
        ("model", model),
        ("input", formatting.count(result.input_tokens)),
        ("output", formatting.count(result.output_tokens)),
        ("cache writes", formatting.count(result.cache_creation_tokens)),
        ("cache reads", formatting.count(result.cache_read_tokens)),
        ("model calls", str(result.calls)),
        ("attempt", str(result.attempt)),
        ("took", f"{took:.1f}s"),
        ("waited on limits", f"{result.waited_seconds:.1f}s"),
    ]
    if result.stop_reason:
        pairs.append(("stopped", result.stop_reason))
    width = max(len(label) for label, _ in pairs)
    return Content("\n").join(
        Content.assemble(label.ljust(width + 2), (value, "bold"))
        for label, value in pairs
    )


def conversation_block(result: TaskResult) -> Content | None:
    """The conversation, one entry after the other; None when there is none."""
    if not result.transcript:
        return None
    return Content("\n").join(_entry(e) for e in result.transcript)


def _entry(entry: TranscriptEntry) -> Content:
    label = _LABELS.get(entry.kind, entry.kind)
    style = "bold red" if entry.is_error else "bold"
    head: list[str | tuple[str, str]] = [(label.ljust(7), style)]
    if entry.tool:
        head.append((entry.tool, "italic"))
        head.append(" ")
    lines = entry.text.splitlines() or [""]
    if entry.kind == "tool_result" and len(lines) > RESULT_LINES:
        more = len(lines) - RESULT_LINES
        lines = [*lines[:RESULT_LINES], f"[{more} more lines]"]
    if entry.kind == "tool_call":
        lines = [" ".join(lines)]
    first, *rest = (_cut(line) for line in lines)
    out = [Content.assemble(*head, first)]
    out.extend(Content("        " + line) for line in rest)
    return Content("\n").join(out)


def _cut(line: str) -> str:
    if len(line) <= LINE_WIDTH:
        return line
    return line[: LINE_WIDTH - 1] + "…"
