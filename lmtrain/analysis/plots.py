"""lmtrain's figures, drawn with matplotlib: probe accuracy against distance, gradient flow against time.

Every function builds a `matplotlib.figure.Figure` (or fills a given `Axes`) with the object-oriented
API on the non-interactive Agg backend and never touches pyplot, whose global state (the current
figure, a registry of open ones, a GUI backend) is not needed here: the figures draw on a machine
without a display and from any thread, and are freed like any other object.
`save_figure` writes one as a PNG; `TensorBoardLogger.figure` sends one to TensorBoard.

    accuracy_figure        the agreement probe of one model (`lmtrain probe --plot`)
    draw_accuracy          the same chart for one or more models, on an Axes (the experiment's left half)
    gradient_flow_figure   g<t> = ‖∂L<T>/∂a<t>‖ as bars against t, log scale (`log.grad_flow`)
    draw_gradient_flows    g<t> of several models before and after training (the experiment's right half)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lmtrain.analysis.probe import ProbeCell

SCREEN_DPI = 100
"""Pixels per inch on screen and in TensorBoard: a 6.4 x 4.2 inch figure is 640 x 420 pixels."""

FILE_DPI = 150
"""Pixels per inch of the PNG files: the same layout as on screen, with sharper text."""

COLORS = ("tab:red", "tab:green", "tab:blue", "tab:orange", "tab:purple")
"""One colour per model when a chart compares several (matplotlib's tab10, reordered)."""

CONDITION_COLORS = {False: "tab:blue", True: "tab:red"}
"""One model's probe: no attractors in blue, attractors in red."""

G_T = r"$\|\partial L^{\langle T\rangle} / \partial a^{\langle t\rangle}\|$"
"""The gradient-flow quantity g<t> in the notation of the notes, as matplotlib mathtext."""


def new_figure(width: float, height: float) -> Figure:
    """An empty `width` x `height` inch figure drawn by the Agg backend, with constrained layout.

    Constrained layout sizes the margins to fit the titles, tick labels and legends, so no text is cut.
    """
    figure = Figure(figsize=(width, height), dpi=SCREEN_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: Path, dpi: int = FILE_DPI) -> None:
    """Write `figure` as a PNG file at `path` (`width * dpi` x `height * dpi` pixels, white background)."""
    figure.savefig(path, dpi=dpi, format="png", facecolor="white")


# ----- the agreement probe ---------------------------------------------------------------------------

ErrorBar = Callable[[str, ProbeCell], tuple[float, float]]
"""The (low, high) error bar of a model's cell; by default its 95% Wilson interval."""


def wilson_bar(name: str, cell: ProbeCell) -> tuple[float, float]:
    return cell.interval


def draw_accuracy(
    ax: Axes, results: dict[str, list[ProbeCell]], title: str, error_bar: ErrorBar = wilson_bar
) -> None:
    """Accuracy against distance for one or more models (`results`: name -> cells), chance dotted at 0.5.

    Each model has two lines: without attractors (dashed) and with them (solid), each point with its
    error bar. The cells at distances without nouns between (0 and 1) belong to neither condition and
    start both lines. Distances sit at evenly spaced positions, since 0, 1, 2, 4, 8 are not evenly
    spaced numbers. One model: a colour per condition; several: a colour per model, shifted sideways a
    little so that their error bars stay apart.
    """
    distances = sorted({cell.distance for cells in results.values() for cell in cells})
    positions = {distance: index for index, distance in enumerate(distances)}
    conditions = ((False, "no attractors", "--"), (True, "attractors", "-"))
    lowest, drawn = 1.0, []
    for index, (name, cells) in enumerate(results.items()):
        shift = 0.08 * (index - (len(results) - 1) / 2)
        for attractors, suffix, linestyle in conditions:
            chosen = sorted(
                (cell for cell in cells if cell.attractors in (None, attractors)), key=lambda c: c.distance
            )
            accuracies = [cell.accuracy for cell in chosen]
            bars = [error_bar(name, cell) for cell in chosen]
            lowest = min([lowest, *(low for low, _ in bars)])
            below = [max(accuracy - low, 0.0) for accuracy, (low, _) in zip(accuracies, bars, strict=True)]
            above = [max(high - accuracy, 0.0) for accuracy, (_, high) in zip(accuracies, bars, strict=True)]
            line = ax.errorbar(
                [positions[cell.distance] + shift for cell in chosen],
                accuracies,
                yerr=[below, above],
                color=CONDITION_COLORS[attractors] if len(results) == 1 else COLORS[index % len(COLORS)],
                linestyle=linestyle,
                linewidth=1.8,
                marker="o",
                markersize=4,
                capsize=3,
                elinewidth=1,
                label=f"{name} {suffix}".strip(),
            )
            drawn.append(line)
    chance = ax.axhline(0.5, color="0.35", linestyle=":", linewidth=1.2, label="chance", zorder=1)
    ax.set_xticks(range(len(distances)), [str(distance) for distance in distances])
    ax.set_xlim(-0.4, len(distances) - 0.6)
    # From chance, or lower in steps of 0.1 when an error bar reaches below it, to 1.
    ax.set_ylim(min(0.5, math.floor(lowest * 10) / 10) - 0.02, 1.02)
    ax.set_xlabel("words between subject and verb")
    ax.set_ylabel("accuracy (share of pairs)")
    ax.set_title(title)
    ax.grid(axis="y", color="0.9")
    ax.set_axisbelow(True)
    # The models' lines in the order drawn, then chance.
    columns = 1 if len(results) == 1 else 2
    ax.legend(handles=[*drawn, chance], loc="lower left", fontsize="small", ncols=columns)


def accuracy_figure(cells: list[ProbeCell], title: str, width: float = 6.4, height: float = 4.2) -> Figure:
    """The probe's plot of one model: accuracy against distance, with and without attractors.

    Error bars are the 95% Wilson intervals.
    """
    figure = new_figure(width, height)
    draw_accuracy(figure.add_subplot(), {"": cells}, title)
    return figure


# ----- gradient flow ---------------------------------------------------------------------------------


def step_ticks(steps: int) -> list[int]:
    """Ticks for t = 1..steps: the first and the last step, and multiples of 1, 2 or 5 x 10^k between
    (at most 8), leaving out one closer to the last step than half the spacing, where labels would touch.
    """
    spacings = (digit * 10**power for power in itertools.count() for digit in (1, 2, 5))
    every = next(spacing for spacing in spacings if steps / spacing <= 8)
    between = [t for t in range(every, steps, every) if steps - t >= every / 2]
    return sorted({1, *between, steps})


def gradient_flow_figure(
    norms: Sequence[float], title: str = "gradient flow through the top layer"
) -> Figure:
    """g<t> = ‖∂L<T>/∂a<t>‖ for t = 1..T as bars on a log scale, with g<1> / g<T> in the title.

    The log scale turns a geometric decay (a vanilla RNN's vanishing gradient) into a straight slope.
    A norm of exactly 0 has no place on it and shows as no bar.
    """
    norms = [float(norm) for norm in norms]
    steps = range(1, len(norms) + 1)
    figure = new_figure(6.4, 3.6)
    ax = figure.add_subplot()
    ax.bar(steps, norms, width=0.8, color="tab:blue")
    ax.set_yscale("log")
    ax.set_xlim(0.4, len(norms) + 0.6)
    ax.set_xticks(step_ticks(len(norms)))
    ax.set_xlabel(f"step t of the training window (the loss is at t = T = {len(norms)})")
    ax.set_ylabel(G_T)
    ratio = norms[0] / norms[-1] if norms[-1] > 0 else math.inf
    ax.set_title(rf"{title}: $g^{{\langle 1\rangle}} / g^{{\langle T\rangle}}$ = {ratio:.1e}")
    ax.grid(axis="y", which="major", color="0.9")
    ax.set_axisbelow(True)
    return figure


def draw_gradient_flows(
    ax: Axes, before: dict[str, Sequence[float]], after: dict[str, Sequence[float]], title: str
) -> None:
    """g<t> against t on a log scale for several models (name -> norms), untrained dashed, trained solid."""
    for index, name in enumerate(after):
        color = COLORS[index % len(COLORS)]
        for label, flows, linestyle in (("untrained", before, "--"), ("trained", after, "-")):
            norms = [float(norm) for norm in flows[name]]
            ax.plot(
                range(1, len(norms) + 1),
                norms,
                color=color,
                linestyle=linestyle,
                linewidth=1.8,
                label=f"{name} {label}",
            )
    steps = len(next(iter(after.values())))
    ax.set_yscale("log")
    ax.set_xlim(0.5, steps + 0.5)
    ax.set_xticks(step_ticks(steps))
    ax.set_xlabel(f"step t of the window (the loss is at t = T = {steps})")
    ax.set_ylabel(G_T)
    ax.set_title(title)
    ax.grid(axis="y", which="major", color="0.9")
    ax.legend(loc="lower right", fontsize="small", ncols=len(after))
