"""Reading text files, building the vocabulary on the training split, and encoding every split.

`load_corpus(data_config)` returns a `Corpus`: the tokenizer (built from the training text only)
and the token ids of each split as 1-D `torch.long` tensors. Validation and test words outside
the vocabulary become `<unk>` (word level); unknown characters are an error (char level).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from lmtrain.config import DataConfig
from lmtrain.datasets import SplitPaths, resolve_dataset
from lmtrain.errors import DataError
from lmtrain.tokenizer import CharTokenizer, Tokenizer, WordTokenizer


@dataclass
class Corpus:
    """A tokenizer and the token ids of the train / valid / (optional) test splits."""

    tokenizer: Tokenizer
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor | None


def read_text(path: Path, what: str = "text file") -> str:
    """A UTF-8 file's text, or a DataError that names the path and the problem."""
    if not path.exists():
        raise DataError(f"{what} {path} does not exist; check the path in the config")
    if path.is_dir():
        raise DataError(f"{what} {path} is a directory; point the config at a text file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{what} {path} is not UTF-8: undecodable byte 0x{error.object[error.start]:02x} at byte offset "
            f"{error.start}; convert the file to UTF-8 (e.g. iconv -t UTF-8)"
        ) from None
    except OSError as error:
        raise DataError(f"cannot read {what} {path}: {error.strerror}") from None
    if not text.strip():
        raise DataError(f"{what} {path} is empty; it needs some text")
    return text


def split_paths(data: DataConfig) -> SplitPaths:
    """The files named by the config, directly or through a named dataset."""
    if data.dataset is not None:
        return resolve_dataset(data.dataset)
    return SplitPaths(data.train, data.valid, data.test)


def build_tokenizer(data: DataConfig, train_text: str) -> Tokenizer:
    if data.tokenizer == "char":
        return CharTokenizer.build(train_text)
    return WordTokenizer.build(train_text.splitlines(), min_freq=data.min_freq, max_vocab=data.max_vocab)


def encode_split(tokenizer: Tokenizer, text: str, path: Path) -> torch.Tensor:
    try:
        return torch.tensor(tokenizer.encode(text), dtype=torch.long)
    except DataError as error:
        raise DataError(f"{path}: {error}") from None


def load_corpus(data: DataConfig) -> Corpus:
    """Read the splits, build the tokenizer on train, and encode all splits."""
    paths = split_paths(data)
    train_text = read_text(paths.train, "training file")
    valid_text = read_text(paths.valid, "validation file")
    test_text = read_text(paths.test, "test file") if paths.test is not None else None
    tokenizer = build_tokenizer(data, train_text)
    return Corpus(
        tokenizer=tokenizer,
        train=encode_split(tokenizer, train_text, paths.train),
        valid=encode_split(tokenizer, valid_text, paths.valid),
        test=encode_split(tokenizer, test_text, paths.test) if test_text is not None else None,
    )


def unigram_perplexity(train: torch.Tensor, valid: torch.Tensor, vocab_size: int) -> float:
    """Perplexity of `valid` under the add-one-smoothed unigram distribution of `train`.

    The baseline a language model must beat: it knows word frequencies but no context.
    """
    counts = torch.bincount(train, minlength=vocab_size).double() + 1.0
    log_probs = (counts / counts.sum()).log()
    return float(torch.exp(-log_probs[valid].mean()))
