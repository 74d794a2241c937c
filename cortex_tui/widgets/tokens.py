"""Tokens per minute over the recent past, with the shared limit drawn in;
input (green) and output (magenta) with their own limits when the series has
them."""

from __future__ import annotations

import math

from textual.reactive import reactive
from textual_plotext import PlotextPlot

from cortex_core.snapshot import TokenSeries
from cortex_tui import formatting

_HEADROOM = 1.15
"""The y axis reaches this far above the larger of the peak and the limit."""
_TICKS = 4
"""About this many labelled steps on each axis."""


class TokenGraph(PlotextPlot):
    """A line of tokens per minute; a horizontal line marks the limit. Input
    and output get a line and a limit line each, in their own colours."""

    series: reactive[TokenSeries | None] = reactive(None)
    """The latest series; None until the first snapshot."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Tokens / min"

    def watch_series(self, series: TokenSeries | None) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        if series is None or not series.tokens_per_minute:
            self.border_title = "Tokens / min (no data yet)"
            self.refresh()
            return
        values = list(series.tokens_per_minute)
        step = series.bucket_seconds / 60
        xs = [-(len(values) - 1 - i) * step for i in range(len(values))]
        split = _split(series)
        top = (
            max([*values, series.limit, series.input_limit, series.output_limit, 1])
            * _HEADROOM
        )
        plt.plot(xs, values, marker="hd", color="cyan")
        if split is not None:
            inputs, outputs = split
            plt.plot(xs, inputs, marker="hd", color="green")
            plt.plot(xs, outputs, marker="hd", color="magenta")
            if series.input_limit > 0:
                plt.hline(series.input_limit, color="green")
            if series.output_limit > 0:
                plt.hline(series.output_limit, color="magenta")
        if series.limit > 0:
            plt.hline(series.limit, color="red")
        plt.ylim(0, top)
        y_ticks = _steps(top)
        plt.yticks(y_ticks, [_short_number(y) for y in y_ticks])
        left = min(xs[0], -step)
        plt.xlim(left, 0)
        x_ticks, x_labels = _time_ticks(-left * 60)
        plt.xticks(x_ticks, x_labels)
        limit = (
            f"limit {formatting.count(series.limit)}" if series.limit else "no limit"
        )
        title = f"Tokens / min: now {formatting.count(values[-1])}, {limit}"
        if split is not None:
            title += (
                f" · in {formatting.count(split[0][-1])}"
                f"{_of(series.input_limit)}"
                f" · out {formatting.count(split[1][-1])}"
                f"{_of(series.output_limit)}"
            )
        self.border_title = title
        self.refresh()


def _split(series: TokenSeries) -> tuple[list[int], list[int]] | None:
    """Input and output lines, when the series has them for every point."""
    n = len(series.tokens_per_minute)
    if len(series.input_per_minute) != n or len(series.output_per_minute) != n:
        return None
    return list(series.input_per_minute), list(series.output_per_minute)


def _of(limit: int) -> str:
    return f" of {formatting.count(limit)}" if limit > 0 else ""


def _steps(top: float) -> list[float]:
    """Round tick positions from 0 up to ``top``: steps of 1, 2 or 5 x 10^n."""
    if top <= 0:
        return [0.0]
    rough = top / _TICKS
    magnitude = 10 ** math.floor(math.log10(rough))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= rough)
    return [i * step for i in range(int(top // step) + 1)]


def _time_ticks(span_seconds: float) -> tuple[list[float], list[str]]:
    """Ticks in minutes before now, labelled in seconds for short spans."""
    if span_seconds < 120:
        seconds = _steps(span_seconds)
        return [-t / 60 for t in seconds], [f"-{t:g}s" if t else "now" for t in seconds]
    minutes = _steps(span_seconds / 60)
    return [-t for t in minutes], [f"-{t:g}m" if t else "now" for t in minutes]


def _short_number(value: float) -> str:
    """``40k`` for 40,000; small numbers as they are."""
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"
