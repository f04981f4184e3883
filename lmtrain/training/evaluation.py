"""Perplexity of a text, read the way the trainer reads its validation text.

`evaluate` is the one evaluation of lmtrain: the trainer calls it on the validation split at every
evaluation, and `lmtrain eval` calls it on a file or a split named by a checkpoint's data config.
The token stream is cut into `batch_size` parallel streams (see `lmtrain.data.batching`) and read in
windows of `bptt` tokens with the hidden state carried from one window to the next, as the
literature reports test perplexities. The first token of each stream is only context and the tail
that does not fill a whole row is dropped, so `Evaluation.tokens` is a little less than the text's
length; with `batch_size = 1` only the very first token is not predicted.

    perplexity = exp(mean cross-entropy in nats),   bits per token = mean cross-entropy / ln 2
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lmtrain.config import Config
from lmtrain.data.batching import TokenStreams, batchify, get_batch, window_starts
from lmtrain.data.corpus import encode_split, split_paths
from lmtrain.data.text import read_text
from lmtrain.data.tokenizer import Tokenizer, WordTokenizer
from lmtrain.devices import state_in
from lmtrain.errors import ConfigError, DataError
from lmtrain.model.language_model import RNNLanguageModel

LN2 = math.log(2.0)

SPLITS = ("valid", "test")


@dataclass
class Evaluation:
    """Validation (or test) metrics: mean cross-entropy per token, in nats."""

    loss: float
    tokens: int

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 700.0))

    @property
    def bits_per_token(self) -> float:
        return self.loss / LN2


@torch.no_grad()
def evaluate(
    model: RNNLanguageModel,
    ids: torch.Tensor | np.ndarray,
    batch_size: int,
    bptt: int,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    dtype: torch.dtype = torch.float32,
    streams: slice = slice(None),
) -> Evaluation:
    """Mean cross-entropy of `ids`, read as `batch_size` streams with the state carried across windows.

    `autocast` and `dtype` are the forward pass's context and compute dtype (see `lmtrain.devices`).
    `streams` reads only that block of the streams (one rank's share in data-parallel training);
    an empty block gives `Evaluation(0.0, 0)`.
    """
    device = model.decoder.weight.device
    if isinstance(ids, torch.Tensor):
        source = batchify(ids, batch_size)[:, streams].contiguous().to(device)  # [rows, streams]
    else:  # stored (memory-mapped) ids, read a window at a time
        source = TokenStreams(ids, batch_size, device).block(streams)
    if source.size(1) == 0:
        return Evaluation(loss=0.0, tokens=0)
    was_training = model.training
    model.eval()
    state = state_in(model.initial_state(source.size(1), device), dtype)
    total_loss, total_tokens = 0.0, 0
    for i in window_starts(source, bptt):
        inputs, targets = get_batch(source, i, bptt)
        with autocast():
            loss, state = model.language_model_loss(inputs, targets, state, reduction="sum")
        total_loss += float(loss)
        total_tokens += targets.numel()
    model.train(was_training)
    return Evaluation(loss=total_loss / total_tokens, tokens=total_tokens)


@dataclass
class TextEvaluation:
    """What `lmtrain eval` reports about one text file."""

    path: Path
    tokenizer_kind: str
    bidirectional: bool
    text_tokens: int
    unk_tokens: int
    batch_size: int
    bptt: int
    result: Evaluation

    def to_dict(self) -> dict:
        data = {
            "file": str(self.path),
            "tokenizer": self.tokenizer_kind,
            "bidirectional": self.bidirectional,
            "text_tokens": self.text_tokens,
            "scored_tokens": self.result.tokens,
            "batch_size": self.batch_size,
            "bptt": self.bptt,
            "loss": self.result.loss,
            "perplexity": self.result.perplexity,
            "bits_per_token": self.result.bits_per_token,
        }
        if self.tokenizer_kind == "char":
            data["bits_per_char"] = self.result.bits_per_token
        else:
            data["unk_tokens"] = self.unk_tokens
        return data


def check_eval_settings(batch_size: int, bptt: int) -> None:
    problems = []
    if batch_size < 1:
        problems.append(f"--batch-size must be at least 1 (got {batch_size})")
    if bptt < 1:
        problems.append(f"--bptt must be at least 1 (got {bptt})")
    if problems:
        raise ConfigError("; ".join(problems))


def split_path(config: Config, split: str) -> Path:
    """The file of a split (`valid` or `test`) named by a run's data config."""
    if split not in SPLITS:
        raise ConfigError(f"--split must be one of {', '.join(SPLITS)} (got {split!r})")
    paths = split_paths(config.data)
    path = paths.valid if split == "valid" else paths.test
    if path is None:
        raise ConfigError(f"the checkpoint's data config has no {split} split; pass the text with --file")
    if not Path(path).exists():
        raise DataError(
            f"the {split} file named by the checkpoint's data config, {path}, does not exist here; run from "
            "the directory the model was trained in, or pass the text with --file"
        )
    return path


def encode_text_file(
    tokenizer: Tokenizer, path: Path, errors: str = "strict", max_tokens: int | None = None
) -> torch.Tensor:
    """The ids `[N]` of a text file under a fixed tokenizer (the checkpoint's), as the corpus encodes it.

    Words outside the vocabulary become `<unk>`, as in the trainer's validation text; a character
    outside a character model's vocabulary is an error that names it. `errors` and `max_tokens` are
    the data config's `errors` and `max_tokens`.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"text file {path} does not exist; check the path")
    ids = encode_split(tokenizer, read_text(path, "text file", errors), path)
    return ids[:max_tokens] if max_tokens is not None else ids


def evaluate_file(
    model: RNNLanguageModel,
    tokenizer: Tokenizer,
    path: Path,
    batch_size: int,
    bptt: int,
    errors: str = "strict",
    max_tokens: int | None = None,
) -> TextEvaluation:
    """Perplexity of a text file under the model, encoded by the checkpoint's own tokenizer.

    `errors` and `max_tokens` are the data config's, so that a split is read exactly as the trainer
    read it. A bidirectional model's loss is the mean of its two directions', as in training.
    """
    check_eval_settings(batch_size, bptt)
    ids = encode_text_file(tokenizer, path, errors, max_tokens)
    need = 2 * batch_size
    if ids.numel() < need:
        raise DataError(
            f"{path} has {ids.numel()} tokens, fewer than evaluation with --batch-size {batch_size} needs "
            f"({need}); lower --batch-size or use a longer text"
        )
    unk = int((ids == tokenizer.unk_id).sum()) if isinstance(tokenizer, WordTokenizer) else 0
    result = evaluate(model, ids, batch_size, bptt)
    return TextEvaluation(
        Path(path), tokenizer.kind, model.config.bidirectional, ids.numel(), unk, batch_size, bptt, result
    )
