"""Line charts drawn on a `Canvas`: the probe's accuracy against distance, gradient norms against time.

`line_chart` fills one rectangle of a canvas with a titled chart: a plot area with grid lines at the
y ticks, labelled axes (linear, or logarithmic in y), an optional dashed reference line (chance, 0.5),
one polyline with square markers per series (optionally dashed, optionally with error bars) and a
legend below. Several charts side by side are several rectangles of one canvas.

    +----------------------------------------+
    | title                                  |
    | y label                                |
    | 1.0 +--------------------------------+ |
    |     |       plot area                | |
    | 0.0 +--------------------------------+ |
    |       0     1     2     4     8        |   x tick labels
    |              x label                   |
    | -- series 1   -- series 2   ...        |   legend
    +----------------------------------------+
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lmtrain.analysis.canvas import GRID, INK, Canvas, Color, text_height, text_width

PALETTE: tuple[Color, ...] = ((214, 39, 40), (44, 160, 44), (31, 119, 180), (255, 127, 14), (148, 103, 189))
"""Red, green, blue, orange, purple (matplotlib's tab10, reordered)."""


@dataclass
class Series:
    """One line: `points` (x, y) in data coordinates, an optional (low, high) error bar per point, and
    a square marker on every point unless `markers` is False."""

    label: str
    points: list[tuple[float, float]]
    color: Color
    dashed: bool = False
    errors: list[tuple[float, float]] | None = None
    markers: bool = True


@dataclass
class Axis:
    """The data range shown, the ticks as (value, label), the axis title, and whether it is log10."""

    low: float
    high: float
    ticks: list[tuple[float, str]]
    label: str
    log: bool = False

    def fraction(self, value: float) -> float:
        """Where `value` lies between low (0) and high (1), on this axis's scale."""
        if self.log:
            value, low, high = (math.log10(max(v, 1e-300)) for v in (value, self.low, self.high))
        else:
            low, high = self.low, self.high
        return (value - low) / (high - low)


def decade_axis(values: list[float], label: str) -> Axis:
    """A log10 axis from the power of ten below the smallest value to the one above the largest."""
    positive = [value for value in values if value > 0] or [1.0]
    low = math.floor(math.log10(min(positive)))
    high = max(math.ceil(math.log10(max(positive))), low + 1)
    every = math.ceil((high - low + 1) / 8)  # at most 8 labelled decades
    ticks = [(10.0**d, f"1e{d}") for d in range(low, high + 1) if (d - low) % every == 0]
    return Axis(10.0**low, 10.0**high, ticks, label, log=True)


SCALE = 2  # font pixels per glyph pixel
LINE_HEIGHT = text_height(SCALE) + 6
SWATCH = 18  # length of the line drawn in front of a legend label


def legend_rows(series: list[Series], width: int) -> list[list[tuple[Series, int]]]:
    """The legend's entries with their x offsets, wrapped into rows no wider than `width`."""
    rows: list[list[tuple[Series, int]]] = [[]]
    x = 0
    for entry in series:
        entry_width = SWATCH + 6 + text_width(entry.label, SCALE) + 16
        if rows[-1] and x + entry_width > width:
            rows.append([])
            x = 0
        rows[-1].append((entry, x))
        x += entry_width
    return rows


def line_chart(
    canvas: Canvas,
    box: tuple[int, int, int, int],
    title: str,
    x_axis: Axis,
    y_axis: Axis,
    series: list[Series],
    reference: float | None = None,
) -> None:
    """Draw a chart into `box` = (left, top, width, height) of `canvas`; `reference` is a dashed y line."""
    left, top, width, height = box
    margin = 8
    rows = legend_rows(series, width - 2 * margin)
    tick_width = max(text_width(label, SCALE) for _, label in y_axis.ticks) if y_axis.ticks else 0
    plot_left = left + margin + tick_width + 8
    plot_right = left + width - margin - 6
    plot_top = top + margin + 2 * LINE_HEIGHT + 4
    plot_bottom = top + height - margin - len(rows) * LINE_HEIGHT - 2 * LINE_HEIGHT - 6

    def x_of(value: float) -> float:
        return plot_left + x_axis.fraction(value) * (plot_right - plot_left)

    def y_of(value: float) -> float:
        return plot_bottom - y_axis.fraction(value) * (plot_bottom - plot_top)

    canvas.text(title, left + margin, top + margin, scale=SCALE)
    canvas.text(y_axis.label, left + margin, top + margin + LINE_HEIGHT, scale=SCALE)
    for value, label in y_axis.ticks:
        y = round(y_of(value))
        canvas.fill(plot_left, y, plot_right + 1, y + 1, GRID)
        label_x = plot_left - 8 - text_width(label, SCALE)
        canvas.text(label, label_x, y - text_height(SCALE) // 2, scale=SCALE)
    for value, label in x_axis.ticks:
        x = round(x_of(value))
        canvas.fill(x, plot_bottom, x + 1, plot_bottom + 4, INK)
        canvas.text(label, x - text_width(label, SCALE) // 2, plot_bottom + 7, scale=SCALE)
    x_label_y = plot_bottom + 7 + LINE_HEIGHT
    x_label_x = (plot_left + plot_right - text_width(x_axis.label, SCALE)) // 2
    canvas.text(x_axis.label, x_label_x, x_label_y, scale=SCALE)
    if reference is not None:
        y = y_of(reference)
        canvas.line(plot_left, y, plot_right, y, INK, dashed=True)
    canvas.fill(plot_left, plot_bottom, plot_right + 1, plot_bottom + 1, INK)  # x axis
    canvas.fill(plot_left - 1, plot_top, plot_left, plot_bottom + 1, INK)  # y axis

    for entry in series:
        points = [(x_of(x), y_of(y)) for x, y in entry.points]
        for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
            canvas.line(x0, y0, x1, y1, entry.color, width=2, dashed=entry.dashed)
        for index, (x, y) in enumerate(points):
            if entry.errors is not None:
                low, high = (round(y_of(value)) for value in entry.errors[index])
                canvas.fill(round(x), high, round(x) + 1, low + 1, entry.color)
                canvas.fill(round(x) - 3, high, round(x) + 4, high + 1, entry.color)
                canvas.fill(round(x) - 3, low, round(x) + 4, low + 1, entry.color)
            if entry.markers:
                canvas.fill(round(x) - 3, round(y) - 3, round(x) + 4, round(y) + 4, entry.color)

    legend_top = x_label_y + LINE_HEIGHT + 4
    for row_index, row in enumerate(rows):
        y = legend_top + row_index * LINE_HEIGHT
        for entry, offset in row:
            x = left + margin + offset
            middle = y + text_height(SCALE) // 2
            canvas.line(x, middle, x + SWATCH, middle, entry.color, width=2, dashed=entry.dashed)
            canvas.text(entry.label, x + SWATCH + 6, y, scale=SCALE)
