"""Server-side SVG charts: geometry computed here, markup in the templates.

Why not a JavaScript chart library: the CSP allows no inline script or style, the
pages must work without JavaScript, and a counter chart is one line — a polyline and
some ticks are less code than wiring a library.  Numbers that go into SVG attributes
are formatted here as plain strings (``"12.5"``), never by the template engine,
which would localise them (``12,5`` in German) and break the SVG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime


def _fmt(v: float) -> str:
    """A coordinate as SVG wants it: dot decimal, one decimal place, no ``-0.0``."""
    text = f"{v:.1f}"
    return "0.0" if text == "-0.0" else text


def nice_step(span: float, target_ticks: int = 4) -> float:
    """A round tick step (1, 2 or 5 × 10ⁿ) that cuts ``span`` into about
    ``target_ticks`` parts."""
    if span <= 0:
        return 1.0
    raw = span / target_ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * magnitude:
            return float(m * magnitude)
    return float(10 * magnitude)  # pragma: no cover - the loop always returns


@dataclass(frozen=True, slots=True)
class ChartPoint:
    """One data point and where it is drawn."""

    at: datetime
    value: int
    x: str
    y: str


@dataclass(frozen=True, slots=True)
class YTick:
    """A horizontal grid line with its value."""

    value: int
    y: str


@dataclass(frozen=True, slots=True)
class XTick:
    """A time label on the x axis."""

    at: datetime
    x: str


@dataclass(frozen=True, slots=True)
class LineChart:
    """Everything the template needs to draw one line chart."""

    width: int
    height: int
    left: str
    right: str
    top: str
    bottom: str
    label_x: str
    """x of the y-axis labels (right-aligned there)."""
    label_y: str
    """y of the x-axis labels."""
    points: tuple[ChartPoint, ...]
    polyline: str
    y_ticks: tuple[YTick, ...]
    x_ticks: tuple[XTick, ...]
    first: ChartPoint
    last: ChartPoint


def line_chart(data: Sequence[tuple[datetime, int]], *, start: datetime, end: datetime,
               width: int = 720, height: int = 240) -> LineChart | None:
    """The geometry of a line through ``data`` (oldest first) over the period
    ``start``..``end``; ``None`` when there is nothing to draw.

    The x axis spans the whole period, not just the data, so a device that started
    reporting last week does not look like a year of history.  The y axis is widened
    to round tick values around the data.
    """
    if not data:
        return None
    left, right, top, bottom = 64.0, width - 12.0, 10.0, height - 26.0
    values = [v for _, v in data]
    lo, hi = min(values), max(values)
    step = nice_step(hi - lo) if hi > lo else nice_step(max(1.0, abs(hi) / 10))
    y_min = math.floor(lo / step) * step
    y_max = math.ceil(hi / step) * step
    if y_max <= y_min:
        y_max = y_min + step
    t0 = start.timestamp()
    t_span = max(1.0, end.timestamp() - t0)

    def x_of(at: datetime) -> float:
        return left + (right - left) * min(1.0, max(0.0, (at.timestamp() - t0) / t_span))

    def y_of(v: float) -> float:
        return bottom - (bottom - top) * (v - y_min) / (y_max - y_min)

    points = tuple(ChartPoint(at=at, value=v, x=_fmt(x_of(at)), y=_fmt(y_of(v)))
                   for at, v in data)
    y_ticks = []
    n = round((y_max - y_min) / step)
    for i in range(n + 1):
        v = y_min + i * step
        y_ticks.append(YTick(value=round(v), y=_fmt(y_of(v))))
    x_ticks = tuple(XTick(at=datetime.fromtimestamp(t0 + t_span * f, tz=start.tzinfo),
                          x=_fmt(left + (right - left) * f)) for f in (0.0, 0.5, 1.0))
    return LineChart(
        width=width, height=height, left=_fmt(left), right=_fmt(right), top=_fmt(top),
        bottom=_fmt(bottom), label_x=_fmt(left - 6), label_y=_fmt(bottom + 18),
        points=points, polyline=" ".join(f"{p.x},{p.y}" for p in points),
        y_ticks=tuple(y_ticks), x_ticks=x_ticks, first=points[0], last=points[-1])


@dataclass(frozen=True, slots=True)
class LevelBar:
    """A supply level drawn as a bar (only for a real percentage)."""

    percent: float
    width: str
    """The filled width on a 0..100 viewBox."""


def level_bar(percent: float | None) -> LevelBar | None:
    """A bar for a real percentage; ``None`` means: show the state text instead."""
    if percent is None:
        return None
    clamped = min(100.0, max(0.0, percent))
    return LevelBar(percent=percent, width=_fmt(clamped))
