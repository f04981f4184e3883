"""The agreement probe: accuracy from stub scorers, the model scorer, reports, and `lmtrain probe`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lmtrain.analysis.plots import accuracy_figure
from lmtrain.analysis.probe import (
    ProbeCell,
    build_test_set,
    format_table,
    known_pairs,
    model_scorer,
    parse_distances,
    probe_to_dict,
    run_probe,
)
from lmtrain.cli import app
from lmtrain.data.agreement import ProbePair, agreement_test_set, vocabulary, word_number
from lmtrain.data.tokenizer import CharTokenizer, WordTokenizer
from lmtrain.errors import ConfigError

from helpers import WORDS, by_hand, png_size, random_model, tiny_config_dict

runner = CliRunner()
DISTANCES = (0, 1, 2, 4, 8)


def prefers_plural(sequences: list[list[str]]) -> list[float]:
    """A stub model that always gives the plural verb the higher score (the last token is the verb)."""
    return [1.0 if word_number(words[-1]) else 0.0 for words in sequences]


def test_a_model_that_always_prefers_the_plural_scores_the_share_of_plural_pairs():
    pairs = agreement_test_set(DISTANCES, 50, seed=3)
    cells = run_probe(pairs, prefers_plural)
    assert [(cell.distance, cell.attractors) for cell in cells] == [
        (0, None), (1, None), (2, False), (2, True), (4, False), (4, True), (8, False), (8, True)
    ]  # fmt: skip
    for cell in cells:
        group = [p for p in pairs if (p.distance, p.attractors) == (cell.distance, cell.attractors)]
        assert cell.pairs == len(group) == 50
        assert cell.correct == sum(pair.plural for pair in group)
        assert 0 < cell.accuracy < 1  # both numbers occur


def test_accuracy_of_a_hand_built_scorer_is_counted_exactly():
    def pair(distance: int, plural: bool) -> ProbePair:
        good, bad = ("are", "is") if plural else ("is", "are")
        subject = "cats" if plural else "cat"
        middle = ["still"] * distance
        return ProbePair(
            ("the", subject, *middle, good), ("the", subject, *middle, bad), 2 + distance, distance, None
        )

    pairs = [pair(0, True), pair(0, False), pair(0, False), pair(1, True), pair(1, True)]
    # A scorer that reads the log P of "is" and "are" from a table: it prefers "is", except after
    # "cats still" where it gives "are" 0.9, and it scores the tie at distance 0 plural as wrong.
    table = {("cats", "are"): -1.0, ("cats", "is"): -1.0, ("cat", "is"): -0.1, ("cat", "are"): -2.0}

    def scorer(sequences: list[list[str]]) -> list[float]:
        scores = []
        for words in sequences:
            if words[-2] == "still":
                scores.append(math.log(0.9 if words[-1] == "are" else 0.1))
            else:
                scores.append(table[words[1], words[-1]])
        return scores

    cells = run_probe(pairs, scorer)
    assert [(cell.distance, cell.pairs, cell.correct) for cell in cells] == [(0, 3, 2), (1, 2, 2)]
    assert cells[0].accuracy == pytest.approx(2 / 3)
    report = probe_to_dict(cells)
    assert report["overall"]["nothing_between"] == {"pairs": 5, "correct": 4, "accuracy": 0.8}
    assert report["cells"][1]["ci95"][1] == 1.0


def test_wilson_interval_matches_the_formula():
    cell = ProbeCell(4, True, pairs=200, correct=150)
    low, high = cell.interval
    assert (low, high) == pytest.approx((0.6857, 0.8049), abs=1e-4)
    assert ProbeCell(0, None, 10, 10).interval[1] == 1.0 and ProbeCell(0, None, 10, 0).interval[0] == 0.0


def test_model_scorer_sums_the_log_probs_of_the_tokens_after_eos():
    model = random_model()
    sequences = [["a", "b", "c"], ["f", "e", "d", "c", "b"], ["a"]]  # different lengths share a batch
    scores = model_scorer(model, WORDS)(sequences)
    for sequence, score in zip(sequences, scores, strict=True):
        ids = [WORDS.eos_id, *(WORDS.index[word] for word in sequence)]
        assert score == pytest.approx(sum(by_hand(model, ids)), rel=1e-5)


def test_distances_parse_and_bad_ones_are_named():
    assert parse_distances("8,0,2") == (0, 2, 8)
    for text, message in (("0,x", "comma-separated"), ("-1,2", "0 or more"), ("2,2", "twice"), ("", "comma")):
        with pytest.raises(ConfigError, match=message):
            parse_distances(text)
    with pytest.raises(ConfigError, match="at least 1"):
        build_test_set((0,), 0, seed=0)
    with pytest.raises(ConfigError, match="distinct pairs"):
        build_test_set((0,), 10_000, seed=0)


def test_vocabulary_check_names_words_or_skips_their_pairs():
    pairs = agreement_test_set((0, 2), 20, seed=0)
    full = WordTokenizer.build([" ".join(vocabulary())])
    assert known_pairs(pairs, full, "error") == (pairs, 0)
    partial = WordTokenizer.build([" ".join(word for word in vocabulary() if word not in ("is", "sleeps"))])
    with pytest.raises(ConfigError, match="'is'.*'sleeps'|'sleeps'.*'is'"):
        known_pairs(pairs, partial, "error")
    kept, skipped = known_pairs(pairs, partial, "skip")
    assert skipped > 0 and len(kept) + skipped == len(pairs)
    assert all("is" not in pair.grammatical + pair.ungrammatical for pair in kept)
    with pytest.raises(ConfigError, match="word-level checkpoint"):
        known_pairs(pairs, CharTokenizer.build("abc"), "error")


def test_table_and_figure_show_every_cell():
    cells = run_probe(agreement_test_set(DISTANCES, 10, seed=0), prefers_plural)
    lines = format_table(cells).splitlines()
    assert lines[0].split()[:3] == ["distance", "nothing", "between"]
    assert [line.split()[0] for line in lines[1:]] == ["0", "1", "2", "4", "8"]
    # Each condition has its own column: distance 0 fills the first, distance 2 the other two.
    assert lines[1].split()[4:] == ["-", "-", "10"] and lines[3].split()[1] == "-"
    (ax,) = accuracy_figure(cells, "test").axes
    assert ax.get_title() == "test"
    plotted = {container.get_label(): container[0] for container in ax.containers}
    for label, attractors in (("no attractors", False), ("attractors", True)):
        # Distances 0 and 1 (nothing between) start both lines; then the condition's own cells.
        chosen = [cell for cell in cells if cell.attractors in (None, attractors)]
        assert [cell.distance for cell in chosen] == [0, 1, 2, 4, 8]
        assert list(plotted[label].get_ydata()) == [cell.accuracy for cell in chosen]


# ----- the command line -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def agreement_checkpoint(tmp_path_factory) -> Path:
    """A tiny word LSTM trained for a few steps on the bundled corpus (whose vocabulary covers the probe)."""
    folder = tmp_path_factory.mktemp("probe-run")
    config = tiny_config_dict(folder, folder / "run", train={"max_steps": 3}, log={"sample_length": 0})
    config["data"] = {"dataset": "agreement", "tokenizer": "word", "max_tokens": 3000}
    (folder / "tiny.yaml").write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["train", str(folder / "tiny.yaml"), "--no-progress"])
    assert result.exit_code == 0, result.output
    return folder / "run" / "best.pt"


def test_probe_prints_the_table_and_writes_a_png_and_tensorboard_events(agreement_checkpoint, tmp_path):
    plot, events = tmp_path / "probe.png", tmp_path / "tb"
    args = ["probe", agreement_checkpoint, "--distances", "0,2,8", "--pairs-per-distance", "20"]
    result = runner.invoke(app, [str(arg) for arg in [*args, "--plot", plot, "--tensorboard", events]])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("agreement probe of") and "lstm, 2 x 24, step 3" in lines[0]
    table = lines[lines.index(next(line for line in lines if line.split()[:1] == ["distance"])) :]
    assert [line.split()[0] for line in table[1:]] == ["0", "2", "8"]
    assert table[2].split()[-1] == "20"
    assert png_size(plot) == (960, 630)  # 6.4 x 4.2 inches at 150 dpi
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    assert "probe/accuracy" in accumulator.Tags()["images"]
    (image,) = accumulator.Images("probe/accuracy")
    assert (image.step, image.width, image.height) == (3, 640, 420)  # the figure at 100 dpi
    assert "probe/d08_attractors" in accumulator.Tags()["scalars"]
    assert accumulator.Scalars("probe/d08_attractors")[0].step == 3


def test_probe_json_parses_and_repeats_with_the_same_seed(agreement_checkpoint):
    args = ["probe", str(agreement_checkpoint), "--distances", "1,4", "--pairs-per-distance", "15", "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert [(c["distance"], c["attractors"], c["pairs"]) for c in report["cells"]] == [
        (1, None, 15),
        (4, False, 15),
        (4, True, 15),
    ]
    assert report["step"] == 3 and report["skipped_pairs"] == 0 and report["seed"] == 0
    assert set(report["overall"]) == {"nothing_between", "no_attractors", "attractors"}
    assert json.loads(runner.invoke(app, args).stdout) == report


def test_probe_in_a_real_process(agreement_checkpoint, tmp_path):
    plot = tmp_path / "probe.png"
    command = [sys.executable, "-m", "lmtrain", "probe", str(agreement_checkpoint)]
    command += ["--distances", "0,4", "--pairs-per-distance", "10", "--plot", str(plot)]
    process = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert process.returncode == 0, process.stderr
    assert "distance" in process.stdout and process.stderr.strip() == f"wrote {plot}"
    assert png_size(plot) == (960, 630)  # 6.4 x 4.2 inches at 150 dpi
