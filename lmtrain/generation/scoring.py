"""The probability a model gives a text: the reference notes' use of a language model.

    P(y<1>, ..., y<T>) = Π P(y<t> | y<1>, ..., y<t-1>),   log P = Σ log P(y<t> | y<1>, ..., y<t-1>)

What is scored, exactly (the same reading as training, where every line ends with `<eos>`):

- word models: the text's words, with each line break inside it read as `<eos>`, followed by a final
  `<eos>`; the first word is predicted after the `<eos>` boundary that starts every line. So
  "the cat ." scores P(the | <eos>) P(cat | <eos> the) P(. | <eos> the cat) P(<eos> | <eos> the cat .),
  T = 4 tokens.
- character models: the text's characters followed by a line break, after a line break. If the
  training text had no line break, the first character is only context and is not scored.

A trailing line break of the input is ignored. From the per-token natural-log probabilities come
the total log P (nats), log2 P (bits), the mean per token and the perplexity exp(-mean).

A bidirectional checkpoint (`model.bidirectional: true`, ELMo's biLM) also has a backward model,
which reads right to left and predicts the previous token. Its score of the same text is
P(y<1>, ..., y<T>) read the other way, Π P(y<t> | y<t+1>, ..., y<T>): the closing boundary is its
context and it scores the words and the opening boundary, so both directions score T tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from lmtrain.data.text import read_text
from lmtrain.data.tokenizer import Tokenizer
from lmtrain.errors import ConfigError, DataError
from lmtrain.generation.sampling import boundary_token, encode_text
from lmtrain.model.language_model import RNNLanguageModel

LN2 = math.log(2.0)

DEFINITION = (
    "word models: the words, each line break as <eos>, and a final <eos>, after the <eos> boundary; "
    "character models: the characters and a final line break, after a line break"
)


@dataclass
class SequenceScore:
    """The natural-log probability of each scored token of one text, under one reading direction."""

    tokens: list[str]
    log_probs: list[float]

    @property
    def log_prob(self) -> float:
        """log P of the whole text, in nats."""
        return sum(self.log_probs)

    @property
    def log2_prob(self) -> float:
        """log2 P of the whole text, in bits."""
        return self.log_prob / LN2

    @property
    def mean_log_prob(self) -> float:
        """The average log-probability per token, in nats."""
        return self.log_prob / len(self.log_probs)

    @property
    def perplexity(self) -> float:
        return math.exp(min(-self.mean_log_prob, 700.0))

    def to_dict(self, per_token: bool = False) -> dict:
        data = {
            "tokens": len(self.tokens),
            "log_prob": self.log_prob,
            "log2_prob": self.log2_prob,
            "mean_log_prob": self.mean_log_prob,
            "perplexity": self.perplexity,
        }
        if per_token:
            data["per_token"] = [
                {"token": token, "prob": math.exp(log_prob), "log_prob": log_prob}
                for token, log_prob in zip(self.tokens, self.log_probs, strict=True)
            ]
        return data


@dataclass
class TextScore:
    """One input text, its score under the forward model and, for a bidirectional one, the backward."""

    text: str
    forward: SequenceScore
    backward: SequenceScore | None = None

    def to_dict(self, rank: int, per_token: bool = False) -> dict:
        data = {"text": self.text, "rank": rank, **self.forward.to_dict(per_token)}
        if self.backward is not None:
            data["backward"] = self.backward.to_dict(per_token)
        return data


def scored_sequence(
    tokenizer: Tokenizer, text: str, unknown: str = "error", what: str = "input"
) -> list[int]:
    """The ids the model reads for `text`: the opening boundary, the text, the closing boundary.

    The first id is context only; every later one is scored. Raises a ConfigError for an empty
    input or one too short to score anything.
    """
    text = text.removesuffix("\n")
    ids = encode_text(tokenizer, text, unknown, what=what)
    if not ids:
        raise ConfigError(f"{what} is empty (no tokens to score); give it some text")
    boundary = boundary_token(tokenizer)
    sequence = [boundary, *ids, boundary] if boundary is not None else ids
    if len(sequence) < 2:
        raise ConfigError(
            f"{what} has one character and this model has no line-break token to read before it; "
            "nothing is left to score"
        )
    return sequence


@torch.inference_mode()
def sequence_log_probs(
    model: RNNLanguageModel, sequences: list[list[int]], batch_size: int = 16, backward: bool = False
) -> list[list[float]]:
    """Log-probabilities in nats of the scored tokens of each sequence `s` of n tokens.

    Forward: log P(s[t] | s[0], ..., s[t-1]) for t = 1 .. n-1. Backward (a bidirectional model's
    right-to-left model): log P(s[t] | s[t+1], ..., s[n-1]) for t = 0 .. n-2. Sequences are padded
    into batches `[L, N]` (time-major) and read from the initial state in one call of the model each.
    Padding goes where the direction reads last (after a sequence forward, before it backward), so it
    cannot change any score. The model should be in eval mode.
    """
    device = model.decoder.weight.device
    results: list[list[float]] = []
    for first in range(0, len(sequences), batch_size):
        chunk = sequences[first : first + batch_size]
        longest = max(map(len, chunk))
        padded = torch.zeros(longest, len(chunk), dtype=torch.long)  # [L, N]
        for column, sequence in enumerate(chunk):
            rows = slice(longest - len(sequence), None) if backward else slice(None, len(sequence))
            padded[rows, column] = torch.tensor(sequence)
        padded = padded.to(device)
        if backward:
            # Entry t: the distribution of padded[t], having read padded[L-1], ..., padded[t+1].
            logits, _ = model.backward_logits(padded[1:])  # [L-1, N, V]
            targets = padded[:-1]
        else:
            # Entry t: the distribution of padded[t+1], having read padded[0], ..., padded[t].
            logits, _ = model(padded[:-1])  # [L-1, N, V]
            targets = padded[1:]
        log_probs = logits.float().log_softmax(dim=-1)
        chosen = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1).t().tolist()  # N lists of L-1
        for column, sequence in zip(chosen, chunk, strict=True):
            scored = len(sequence) - 1
            results.append(column[longest - 1 - scored :] if backward else column[:scored])
    return results


def score_texts(
    model: RNNLanguageModel, tokenizer: Tokenizer, texts: list[str], unknown: str = "error"
) -> list[TextScore]:
    """The score of each text, in the order given (see the module docstring for what is scored)."""
    if not texts:
        raise ConfigError("nothing to score: give one or more TEXT arguments or --file")
    sequences = [
        scored_sequence(tokenizer, text, unknown, what=f"input {number}" if len(texts) > 1 else "the input")
        for number, text in enumerate(texts, start=1)
    ]
    forward = sequence_log_probs(model, sequences)
    scores = [
        TextScore(text, SequenceScore([tokenizer.tokens[i] for i in sequence[1:]], log_probs))
        for text, sequence, log_probs in zip(texts, sequences, forward, strict=True)
    ]
    if model.config.bidirectional:
        backward = sequence_log_probs(model, sequences, backward=True)
        for score, sequence, log_probs in zip(scores, sequences, backward, strict=True):
            score.backward = SequenceScore([tokenizer.tokens[i] for i in sequence[:-1]], log_probs)
    return scores


def read_inputs(path: Path) -> list[str]:
    """The non-blank lines of a UTF-8 file, one input each."""
    if not Path(path).exists():
        raise DataError(f"--file {path} does not exist; check the path")
    return [line for line in read_text(Path(path), "--file").splitlines() if line.strip()]


def ranking(scores: list[TextScore]) -> list[int]:
    """Indices of `scores` from the most probable text to the least, by the forward model's total log P
    (ties keep the order given)."""
    return sorted(range(len(scores)), key=lambda i: -scores[i].forward.log_prob)


def scores_to_dict(scores: list[TextScore], tokenizer_kind: str, per_token: bool = False) -> dict:
    """The machine-readable report of `lmtrain score --json` (inputs in the order given)."""
    ranks = {index: rank for rank, index in enumerate(ranking(scores), start=1)}
    return {
        "tokenizer": tokenizer_kind,
        "scored": DEFINITION,
        "inputs": [score.to_dict(ranks[index], per_token) for index, score in enumerate(scores)],
    }


def show_token(token: str, tokenizer_kind: str) -> str:
    """A token as it reads in a table: words as they are, characters quoted (so ' ' and '\\n' show)."""
    return repr(token) if tokenizer_kind == "char" else token


def format_scores(scores: list[TextScore], tokenizer_kind: str, per_token: bool = False) -> str:
    """A table of the inputs from most to least probable; with `per_token`, each token's probability.

    A bidirectional model adds the backward model's log P and perplexity, and a backward column to
    the per-token tables (whose rows are then the whole sequence read, both boundaries included).
    """
    both = any(score.backward is not None for score in scores)
    header = f"{'rank':>4}  {'log P (nats)':>12}  {'log2 P (bits)':>13}  {'tokens':>6}  "
    header += f"{'nats/token':>10}  {'perplexity':>10}  "
    header += f"{'backward log P':>14}  {'backward ppl':>12}  text" if both else "text"
    lines = [header]
    order = ranking(scores)
    for rank, index in enumerate(order, start=1):
        score = scores[index].forward
        line = f"{rank:>4}  {score.log_prob:>12.4f}  {score.log2_prob:>13.4f}  {len(score.tokens):>6}  "
        line += f"{score.mean_log_prob:>10.4f}  {score.perplexity:>10.3f}  "
        backward = scores[index].backward
        if backward is not None:
            line += f"{backward.log_prob:>14.4f}  {backward.perplexity:>12.3f}  "
        lines.append(line + scores[index].text)
    if per_token:
        for rank, index in enumerate(order, start=1):
            lines += ["", f"{rank}. {scores[index].text}", *token_table(scores[index], tokenizer_kind)]
    return "\n".join(lines)


def token_table(score: TextScore, tokenizer_kind: str) -> list[str]:
    """Rows of token, P and log P (and the backward model's P and log P)."""
    forward, backward = score.forward, score.backward
    tokens, forward_log_probs = forward.tokens, list(forward.log_probs)
    if backward is not None:
        # Align the two by position in the sequence read: the forward model scores positions 1 .. n-1
        # (position 0, the opening boundary, is its context), the backward model positions 0 .. n-2.
        tokens = [backward.tokens[0], *tokens]
        forward_log_probs = [None, *forward_log_probs]
        backward_log_probs = [*backward.log_probs, None]
    shown = [show_token(token, tokenizer_kind) for token in tokens]
    width = max(8, *map(len, shown))

    def cells(log_prob: float | None) -> str:
        if log_prob is None:
            return f"{'-':>10}  {'-':>9}"
        return f"{math.exp(log_prob):>10.6f}  {log_prob:>9.4f}"

    header = f"  {'token':<{width}}  {'P':>10}  {'log P':>9}"
    if backward is not None:
        header += f"  {'P bwd':>10}  {'log P bwd':>9}"
    lines = [header]
    for position, token in enumerate(shown):
        line = f"  {token:<{width}}  {cells(forward_log_probs[position])}"
        if backward is not None:
            line += f"  {cells(backward_log_probs[position])}"
        lines.append(line)
    return lines
