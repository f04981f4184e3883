"""The long-range dependency probe: does a word model make the verb agree with a subject far back?

The reference notes' example of what vanilla RNNs forget is "The cat, which already ate ..., was full"
against "The cats, which already ate ..., were full". The probe asks a trained word model that
question many times over, with minimal pairs from the agreement grammar (`lmtrain.data.agreement`):

    the cat near the tables behind them  is  hungry .      grammatical
    the cat near the tables behind them  are hungry .      the verb's number flipped

A pair counts as correct when the model gives the grammatical verb the higher probability after the
shared prefix, P(is | <eos> the cat ... them) > P(are | <eos> the cat ... them). Since both sentences
share everything before the verb, that is the same as comparing log P of the two prefixes that end
with the verb, which is what a `Scorer` computes; the words after the verb do not enter. Ties count
as wrong. Accuracy is reported per distance (words between subject and verb) and attractor condition
(the nouns between have the subject's number, or the other one), with a 95% Wilson interval.

The test set is a function of the distances, the pairs per condition and the seed alone (see
`agreement.agreement_test_set`); no grammatical sentence in it is a line of the bundled training text.
The plot of the results is `lmtrain.analysis.plots.accuracy_figure`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from lmtrain.data.agreement import ProbePair, agreement_test_set, bundled_training_sentences
from lmtrain.data.tokenizer import Tokenizer, WordTokenizer, format_tokens
from lmtrain.errors import ConfigError

Scorer = Callable[[list[list[str]]], list[float]]
"""Log-probability (any base, any monotone score) of each token sequence, read from the start of a line."""

Z_95 = 1.959964  # the standard normal's 97.5% quantile


@dataclass(frozen=True)
class ProbeCell:
    """The result of one distance and attractor condition (None: no noun between subject and verb)."""

    distance: int
    attractors: bool | None
    pairs: int
    correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.pairs

    @property
    def interval(self) -> tuple[float, float]:
        """The 95% Wilson score interval of the accuracy (good at small n and near 0 or 1)."""
        n, p, z2 = self.pairs, self.accuracy, Z_95**2
        centre = (p + z2 / (2 * n)) / (1 + z2 / n)
        half = Z_95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
        low = 0.0 if self.correct == 0 else max(centre - half, 0.0)
        high = 1.0 if self.correct == n else min(centre + half, 1.0)
        return low, high

    def to_dict(self) -> dict:
        low, high = self.interval
        return {
            "distance": self.distance,
            "attractors": self.attractors,
            "pairs": self.pairs,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "ci95": [low, high],
        }


def parse_distances(text: str) -> tuple[int, ...]:
    """ "0,1,2,4,8" -> (0, 1, 2, 4, 8); a ConfigError names what is wrong."""
    try:
        distances = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(
            f"--distances must be comma-separated whole numbers such as 0,1,2,4,8 (got {text!r})"
        ) from None
    bad = [distance for distance in distances if distance < 0]
    if bad:
        raise ConfigError(f"--distances must be 0 or more (got {', '.join(map(str, bad))})")
    if len(set(distances)) != len(distances):
        raise ConfigError(f"--distances lists a distance twice (got {text!r})")
    return tuple(sorted(distances))


def build_test_set(distances: tuple[int, ...], pairs_per_condition: int, seed: int) -> list[ProbePair]:
    """The probe's pairs, none of whose grammatical sentences is a line of the bundled train.txt."""
    if pairs_per_condition < 1:
        raise ConfigError(f"--pairs-per-distance must be at least 1 (got {pairs_per_condition})")
    try:
        return agreement_test_set(distances, pairs_per_condition, seed, bundled_training_sentences())
    except ValueError as error:
        raise ConfigError(str(error)) from None


def known_pairs(pairs: list[ProbePair], tokenizer: Tokenizer, unknown: str) -> tuple[list[ProbePair], int]:
    """The pairs whose words (both verb forms included) are all in the vocabulary, and how many were not.

    `unknown="error"` refuses any unknown word and names them; `"skip"` drops the pairs that hold one.
    """
    if not isinstance(tokenizer, WordTokenizer):
        raise ConfigError(
            "lmtrain probe needs a word-level checkpoint (data.tokenizer: word); this one is a character "
            "model, which cannot score the probe's words as single tokens"
        )
    if unknown not in ("error", "skip"):
        raise ConfigError(f"--unknown must be error or skip (got {unknown!r})")
    missing = {
        word
        for pair in pairs
        for word in (*pair.grammatical, *pair.ungrammatical)
        if word not in tokenizer.index
    }
    if missing and unknown == "error":
        raise ConfigError(
            f"the probe's words are not all in the model's vocabulary: {format_tokens(sorted(missing))}; "
            "train on the agreement corpus (data.dataset: agreement), or drop the pairs that use them "
            "with --unknown skip"
        )
    kept = [pair for pair in pairs if missing.isdisjoint(pair.grammatical + pair.ungrammatical)]
    if not kept:
        raise ConfigError(
            "every probe pair has a word outside the model's vocabulary; nothing is left to score"
        )
    return kept, len(pairs) - len(kept)


def run_probe(pairs: list[ProbePair], scorer: Scorer) -> list[ProbeCell]:
    """Score every pair and count, per (distance, condition) in the pairs' order, the correct ones."""
    prefixes = []
    for pair in pairs:
        prefixes.append(list(pair.grammatical[: pair.verb_index + 1]))
        prefixes.append(list(pair.ungrammatical[: pair.verb_index + 1]))
    scores = scorer(prefixes)
    counts: dict[tuple[int, bool | None], list[int]] = {}
    for index, pair in enumerate(pairs):
        good, bad = scores[2 * index], scores[2 * index + 1]
        tally = counts.setdefault((pair.distance, pair.attractors), [0, 0])
        tally[0] += 1
        tally[1] += int(good > bad)
    return [ProbeCell(distance, attractors, n, k) for (distance, attractors), (n, k) in counts.items()]


def model_scorer(model, tokenizer: WordTokenizer, batch_size: int = 64) -> Scorer:
    """A Scorer from a word model: the natural-log probability of the tokens after an opening `<eos>`.

    A bidirectional checkpoint is scored by its forward model (the one that predicts the verb from
    the words before it).
    """
    from lmtrain.generation.scoring import sequence_log_probs

    def score(sequences: list[list[str]]) -> list[float]:
        ids = [[tokenizer.eos_id, *(tokenizer.index[word] for word in words)] for words in sequences]
        return [sum(log_probs) for log_probs in sequence_log_probs(model, ids, batch_size)]

    return score


# ----- reports ---------------------------------------------------------------------------------------


def cell_table(cells: list[ProbeCell]) -> dict[int, dict[bool | None, ProbeCell]]:
    """The cells by distance, then by condition."""
    table: dict[int, dict[bool | None, ProbeCell]] = {}
    for cell in cells:
        table.setdefault(cell.distance, {})[cell.attractors] = cell
    return table


def shown(cell: ProbeCell | None) -> str:
    if cell is None:
        return "-"
    low, high = cell.interval
    return f"{cell.accuracy:.3f} [{low:.2f}, {high:.2f}]"


def format_table(cells: list[ProbeCell]) -> str:
    """Accuracy by distance: one row per distance, one column per attractor condition.

    At distances 0 and 1 no noun stands between subject and verb, so the pairs there belong to
    neither condition; they are shown in a column of their own.
    """
    width = 22
    lines = [
        f"{'distance':>8}  {'nothing between':>{width}}  {'no attractors':>{width}}  "
        f"{'attractors':>{width}}  {'pairs':>5}"
    ]
    for distance, by_condition in sorted(cell_table(cells).items()):
        columns = [shown(by_condition.get(condition)) for condition in (None, False, True)]
        pairs = max(cell.pairs for cell in by_condition.values())
        row = "  ".join(f"{column:>{width}}" for column in columns)
        lines.append(f"{distance:>8}  {row}  {pairs:>5}")
    return "\n".join(lines)


def probe_to_dict(cells: list[ProbeCell]) -> dict:
    """The JSON report's results: the definition, every cell, and overall accuracy per condition."""
    overall = {}
    for name, condition in (("nothing_between", None), ("no_attractors", False), ("attractors", True)):
        chosen = [cell for cell in cells if cell.attractors is condition]
        if chosen:
            pairs, correct = sum(c.pairs for c in chosen), sum(c.correct for c in chosen)
            overall[name] = {"pairs": pairs, "correct": correct, "accuracy": correct / pairs}
    return {
        "correct_when": "log P(grammatical verb | prefix) > log P(ungrammatical verb | prefix)",
        "cells": [cell.to_dict() for cell in cells],
        "overall": overall,
    }
