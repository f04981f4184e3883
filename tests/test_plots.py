"""The figures (`lmtrain.analysis.plots`): what they plot, how they are labelled, and the PNG files."""

from __future__ import annotations

import importlib.util
import json
import threading
from pathlib import Path

import pytest
from matplotlib.colors import to_rgba

from lmtrain.analysis.plots import (
    COLORS,
    FILE_DPI,
    accuracy_figure,
    draw_accuracy,
    draw_gradient_flows,
    new_figure,
    save_figure,
)
from lmtrain.analysis.probe import ProbeCell

from helpers import png_size

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def cells_of(accuracies: dict[tuple[int, bool | None], int], pairs: int = 20) -> list[ProbeCell]:
    """Probe cells from the number correct per (distance, attractors)."""
    return [
        ProbeCell(distance, attractors, pairs, correct)
        for (distance, attractors), correct in accuracies.items()
    ]


def spans(container) -> list[float]:
    """low, high, low, high, ... of the vertical bars of an `errorbar` container, point by point."""
    (bars,) = container[2]
    return [float(y) for segment in bars.get_segments() for y in (segment[0][1], segment[1][1])]


RNN = cells_of({(0, None): 20, (2, False): 18, (2, True): 12, (4, False): 16, (4, True): 8})
LSTM = cells_of({(0, None): 20, (2, False): 20, (2, True): 19, (4, False): 19, (4, True): 17})


def test_a_saved_figure_is_a_png_of_its_size_times_the_dpi(tmp_path):
    figure = new_figure(4, 3)
    figure.add_subplot().plot([1, 2, 3], [3, 1, 2])
    save_figure(figure, tmp_path / "small.png", dpi=50)
    assert png_size(tmp_path / "small.png") == (200, 150)
    save_figure(figure, tmp_path / "default.png")
    assert png_size(tmp_path / "default.png") == (4 * FILE_DPI, 3 * FILE_DPI)


def test_an_unwritable_path_raises_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        save_figure(new_figure(2, 2), tmp_path / "missing" / "plot.png")


def test_one_models_chart_has_a_line_per_condition_with_wilson_bars_and_chance():
    figure = accuracy_figure(RNN, "rnn probe")
    (ax,) = figure.axes
    assert ax.get_title() == "rnn probe"
    assert ax.get_xlabel() == "words between subject and verb"
    assert ax.get_ylabel() == "accuracy (share of pairs)"
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend == ["no attractors", "attractors", "chance"]
    assert [label.get_text() for label in ax.get_xticklabels()] == ["0", "2", "4"]
    lines = {container.get_label(): container for container in ax.containers}
    for label, attractors, color, style in (
        ("no attractors", False, "tab:blue", "--"),
        ("attractors", True, "tab:red", "-"),
    ):
        line = lines[label][0]
        chosen = [cell for cell in RNN if cell.attractors in (None, attractors)]
        assert list(line.get_xdata()) == [0, 1, 2]
        assert list(line.get_ydata()) == [cell.accuracy for cell in chosen]
        assert line.get_color() == color and line.get_linestyle() == style
        # Each error bar runs over the cell's 95% Wilson interval.
        assert spans(lines[label]) == pytest.approx([y for cell in chosen for y in cell.interval])
    (chance,) = [line for line in ax.get_lines() if line.get_label() == "chance"]
    assert list(chance.get_ydata()) == [0.5, 0.5]
    # The lowest Wilson bound, 0.22 (8 of 20), rounded down to 0.2: the axis shows every error bar.
    assert ax.get_ylim() == pytest.approx((0.18, 1.02))


def test_several_models_share_a_chart_a_colour_each_with_the_error_bars_given():
    figure = new_figure(6, 4)
    ax = figure.add_subplot()

    def half_width(name: str, cell: ProbeCell) -> tuple[float, float]:
        return cell.accuracy - 0.25, min(cell.accuracy + 0.05, 1.0)

    draw_accuracy(ax, {"rnn": RNN, "lstm": LSTM}, "two models", half_width)
    lines = {container.get_label(): container for container in ax.containers}
    assert list(lines) == ["rnn no attractors", "rnn attractors", "lstm no attractors", "lstm attractors"]
    for name, cells, color, shift in (("rnn", RNN, COLORS[0], -0.04), ("lstm", LSTM, COLORS[1], 0.04)):
        line = lines[f"{name} attractors"][0]
        chosen = [cell for cell in cells if cell.attractors in (None, True)]
        assert list(line.get_xdata()) == pytest.approx([position + shift for position in (0, 1, 2)])
        assert list(line.get_ydata()) == [cell.accuracy for cell in chosen]
        assert to_rgba(line.get_color()) == to_rgba(color)
        expected = [y for cell in chosen for y in half_width(name, cell)]
        assert spans(lines[f"{name} attractors"]) == pytest.approx(expected)
    # The lowest bar (0.4 - 0.25 = 0.15) reaches below chance: the axis goes down to 0.1.
    assert ax.get_ylim()[0] == pytest.approx(0.08)


def test_gradient_flows_of_several_models_are_lines_on_a_log_scale():
    figure = new_figure(6, 4)
    ax = figure.add_subplot()
    before = {"rnn": [1e-3, 1e-2, 1e-1], "lstm": [1e-2, 1e-1, 1.0]}
    after = {"rnn": [1e-5, 1e-3, 1e-1], "lstm": [0.1, 0.3, 1.0]}
    draw_gradient_flows(ax, before, after, "flows")
    assert ax.get_yscale() == "log" and ax.get_title() == "flows"
    assert ax.get_xlabel() == "step t of the window (the loss is at t = T = 3)"
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == ["rnn untrained", "rnn trained", "lstm untrained", "lstm trained"]
    assert [text.get_text() for text in ax.get_legend().get_texts()] == list(lines)
    for name in after:
        assert list(lines[f"{name} untrained"].get_ydata()) == before[name]
        assert list(lines[f"{name} trained"].get_ydata()) == after[name]
        assert list(lines[f"{name} trained"].get_xdata()) == [1, 2, 3]
        assert lines[f"{name} untrained"].get_linestyle() == "--"
        assert lines[f"{name} trained"].get_color() == lines[f"{name} untrained"].get_color()


def test_figures_draw_and_save_in_a_thread(tmp_path):
    errors = []

    def draw() -> None:
        try:
            save_figure(accuracy_figure(RNN, "in a thread"), tmp_path / "thread.png", dpi=100)
        except Exception as error:  # reported to the test below
            errors.append(error)

    thread = threading.Thread(target=draw)
    thread.start()
    thread.join()
    assert errors == [] and png_size(tmp_path / "thread.png") == (640, 420)


def fake_run(cells: list[ProbeCell], more_correct: int, flow_scale: float, steps: int = 35) -> dict:
    """One model's entry in the experiment's results.json."""
    return {
        "hidden_size": 10,
        "parameters": 1000,
        "steps": 50,
        "best_step": 40,
        "seconds": 1.0,
        "best_valid_perplexity": 9.0,
        "probe": [
            ProbeCell(
                cell.distance, cell.attractors, cell.pairs, min(cell.correct + more_correct, cell.pairs)
            ).to_dict()
            for cell in cells
        ],
        "grad_flow_untrained": [10.0 ** (t / 10 - 4) for t in range(steps)],
        "grad_flow_trained": [flow_scale * 10.0 ** (t / 5 - 7) for t in range(steps)],
    }


def test_the_agreement_experiment_redraws_its_figure_from_results_json(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("agreement_experiment", SCRIPTS / "agreement_experiment.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    seeds = {
        "1": {"rnn": fake_run(RNN, 0, 1.0), "lstm": fake_run(LSTM, 0, 1.0)},
        "2": {"rnn": fake_run(RNN, 2, 2.0), "lstm": fake_run(LSTM, 2, 2.0)},
    }
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "results.json").write_text(json.dumps({"seeds": seeds}))
    saved, save = [], script.save_figure
    script.save_figure = lambda figure, path: (saved.append(figure), save(figure, path))

    figure_file = tmp_path / "docs" / "experiment.png"
    script.main(["--runs", str(runs), "--figure", str(figure_file), "--report-only"])
    assert png_size(figure_file) == (1920, 780)  # 12.8 x 5.2 inches at FILE_DPI
    (figure,) = saved
    left, right = figure.axes
    assert left.get_title() == "agreement probe: accuracy, 2 seeds (bars: lowest to highest)"
    pooled = {container.get_label(): list(container[0].get_ydata()) for container in left.containers}
    assert pooled["rnn attractors"] == [40 / 40, 26 / 40, 18 / 40]  # both seeds' pairs together
    flows = {line.get_label(): list(line.get_ydata()) for line in right.get_lines()}
    assert list(right.get_xticks()) == [1, 5, 10, 15, 20, 25, 30, 35]  # t = 1, round numbers, t = T
    assert flows["lstm trained"] == pytest.approx([1.5 * 10.0 ** (t / 5 - 7) for t in range(35)], rel=1e-6)
    assert "| hidden size | 10 | 10 |" in capsys.readouterr().out
