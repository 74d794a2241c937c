"""How values from a snapshot are written on screen, in one place.

Times are formatted from the snapshot's own timestamps and an explicit time
zone, never from the machine's clock, so a fixed snapshot draws the same way
everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, tzinfo

from rich.style import Style

SHORT_ID = 8
"""Characters of a task id shown in tables."""

MISSING = "-"
"""Shown where a value is unknown."""


def clock(at: float, tz: tzinfo | None) -> str:
    """``HH:MM:SS`` of a Unix timestamp in ``tz`` (the local zone if None)."""
    moment = datetime.fromtimestamp(at, tz) if tz else datetime.fromtimestamp(at)
    return moment.strftime("%H:%M:%S")


def short_id(task_id: str) -> str:
    """The last digits: the first ones of a cortex id are its creation time,
    the same for every task made in the same minute."""
    return task_id[-SHORT_ID:]


def task_list(task_ids: Sequence[str]) -> str:
    """The first id, short, and ``+N`` for the rest."""
    if not task_ids:
        return MISSING
    first = short_id(task_ids[0])
    rest = len(task_ids) - 1
    return f"{first} +{rest}" if rest else first


def percent(value: float | None) -> str:
    return MISSING if value is None else f"{value:.1f}"


def mebibytes(rss_bytes: int | None) -> str:
    return MISSING if rss_bytes is None else f"{rss_bytes / 1_048_576:.0f}"


def age(seconds: float | None) -> str:
    """A pod's age as kubectl shows it: 45s, 12m, 5h, 3d."""
    if seconds is None:
        return MISSING
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def count(value: int) -> str:
    """A whole number with thousands separators."""
    return f"{value:,}"


def token_limit(limit: int) -> str:
    return "unlimited" if limit <= 0 else f"{limit:,} tok/min"


def tail(text: str, width: int) -> str:
    """Keep the end of ``text`` (where pod names differ), marking a cut."""
    if len(text) <= width:
        return text
    return "…" + text[len(text) - width + 1 :]


def paint(style: str, *, no_color: bool) -> Style:
    """``style`` as given, or only its attributes (bold, reverse…) for NO_COLOR.

    Textual turns colours grey under NO_COLOR, which leaves red text dark and
    hard to read; without its colour the text keeps the default foreground.
    """
    parsed = Style.parse(style)
    return parsed.without_color if no_color else parsed
