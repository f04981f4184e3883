"""Where the splits come from, the vocabulary built on the training split, and every split encoded.

`load_corpus(data_config)` returns a `Corpus`: the tokenizer (built from the training text only)
and the token ids of each split as 1-D `torch.long` tensors. Validation and test words outside
the vocabulary become `<unk>` (word level); unknown characters are an error (char level).

Text is streamed in 1 MiB chunks (`lmtrain.data.text`) and never held whole, so a corpus larger than
memory tokenizes in bounded memory. The results are cached in the cache directory (`LMTRAIN_CACHE`):

    <cache>/vocab/<key>.json    the tokenizer; key = sha256 of the training file + tokenizer settings
    <cache>/tokens/<key>.u16    token ids of one file, uint16 when the vocabulary fits, else .u32;
                                key = sha256 of that file + the vocabulary's key

so a second run reads each file once to hash it and memory-maps the ids. A changed file has a new
hash, hence a new key: stale ids are never used.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from itertools import repeat
from pathlib import Path

import numpy as np
import torch

from lmtrain.config import DataConfig
from lmtrain.data.datasets import (
    SplitPaths,
    atomic_output,
    cache_dir,
    file_sha256,
    resolve_dataset,
    split_fractions,
)
from lmtrain.data.text import check_text_file, empty_file_error, iter_lines_blocks, iter_text
from lmtrain.data.tokenizer import CharTokenizer, Tokenizer, WordTokenizer, tokenizer_from_dict
from lmtrain.errors import CheckpointError, DataError

CACHE_FORMAT = 1  # bump when the meaning of cached ids changes


@dataclass
class Corpus:
    """A tokenizer and the token ids of the train / valid / (optional) test splits.

    `train_ids`, `valid_ids` and `test_ids` are the ids as cached on disk (uint16 or uint32),
    memory-mapped: a split is never read into memory whole, so a corpus larger than memory trains
    (the trainer reads it a window at a time, see `lmtrain.data.batching.TokenStreams`). `train`, `valid`
    and `test` are int64 tensor copies, made on first use, for the splits small enough to hold.
    """

    tokenizer: Tokenizer
    train_ids: np.ndarray
    valid_ids: np.ndarray
    test_ids: np.ndarray | None

    @cached_property
    def train(self) -> torch.Tensor:
        return as_long_tensor(self.train_ids)

    @cached_property
    def valid(self) -> torch.Tensor:
        return as_long_tensor(self.valid_ids)

    @cached_property
    def test(self) -> torch.Tensor | None:
        return None if self.test_ids is None else as_long_tensor(self.test_ids)


# ---------------------------------------------------------------- where the splits come from


def split_paths(data: DataConfig, cache: Path | None = None) -> SplitPaths:
    """The files named by the config: a named dataset, three paths, or one file cut by `data.split`."""
    if data.dataset is not None:
        return resolve_dataset(data.dataset)
    if data.file is not None:
        return split_one_file(data.file, tuple(data.split), data.errors, cache or cache_dir())
    return SplitPaths(data.train, data.valid, data.test)


def split_one_file(path: Path, fractions: tuple[float, ...], errors: str, cache: Path) -> SplitPaths:
    """Cut `path` by character fractions into split files in the cache (made once per file content)."""
    check_text_file(path, "data.file")
    names = ("train", "valid", "test")[: len(fractions)]
    key = f"{file_sha256(path)[:24]}-{errors}-" + "-".join(f"{f:g}" for f in fractions)
    outputs = tuple(cache / "splits" / key / f"{name}.txt" for name in names)
    if not all(output.exists() for output in outputs):
        split_fractions(path, fractions, outputs, errors)
    return SplitPaths(outputs[0], outputs[1], outputs[2] if len(outputs) == 3 else None)


# ---------------------------------------------------------------- vocabulary, built on train only


def build_tokenizer(data: DataConfig, train: Path) -> Tokenizer:
    """Build the tokenizer from the training file in one streamed pass."""
    what = "training file"
    has_text = False
    if data.tokenizer == "char":
        seen = np.zeros(0x110000, dtype=bool)  # one flag per Unicode code point
        for text in iter_text(train, data.errors, what):
            seen[np.frombuffer(text.encode("utf-32-le"), dtype="<u4")] = True
            has_text = has_text or not text.isspace()
        if not has_text:
            raise empty_file_error(train, what)
        return CharTokenizer([chr(code) for code in np.flatnonzero(seen)])
    counts: Counter[str] = Counter()
    for text in iter_lines_blocks(train, data.errors, what):  # blocks end at line breaks: no word is cut
        words = text.split()
        counts.update(words)
        has_text = has_text or bool(words)
    if not has_text:
        raise empty_file_error(train, what)
    return WordTokenizer.from_counts(counts, min_freq=data.min_freq, max_vocab=data.max_vocab)


def settings_key(data: DataConfig, train_sha256: str) -> str:
    settings = {
        "format": CACHE_FORMAT,
        "train": train_sha256,
        "tokenizer": data.tokenizer,
        "min_freq": data.min_freq,
        "max_vocab": data.max_vocab,
        "errors": data.errors,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]


def cached_tokenizer(data: DataConfig, train: Path, cache: Path) -> tuple[Tokenizer, str]:
    """The tokenizer of `train` under `data`'s settings, from the cache or built and cached."""
    key = settings_key(data, file_sha256(train))
    path = cache / "vocab" / f"{key}.json"
    if path.exists():
        try:
            return tokenizer_from_dict(json.loads(path.read_text(encoding="utf-8"))), key
        except (ValueError, CheckpointError):
            pass  # a damaged cache entry is rebuilt below
    tokenizer = build_tokenizer(data, train)
    with atomic_output(path) as temporary:
        temporary.write_text(json.dumps(tokenizer.to_dict(), ensure_ascii=False), encoding="utf-8")
    return tokenizer, key


# ---------------------------------------------------------------- token ids, streamed and cached


def id_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def chunk_encoder(tokenizer: Tokenizer) -> Callable[[str], np.ndarray]:
    """A function from a chunk of text (for word tokenizers: whole lines) to its ids as an int64 array."""
    if isinstance(tokenizer, CharTokenizer):
        # A table from every Unicode code point to its id (-1: not in the vocabulary) maps a whole
        # chunk in one vectorized lookup, about 50x faster than a dict lookup per character.
        table = np.full(0x110000, -1, dtype=np.int64)
        table[[ord(char) for char in tokenizer.tokens]] = np.arange(tokenizer.vocab_size)

        def encode_chars(text: str) -> np.ndarray:
            ids = table[np.frombuffer(text.encode("utf-32-le"), dtype="<u4")]
            if (ids < 0).any():
                tokenizer.encode(text)  # raises the DataError that names the unknown characters
            return ids

        return encode_chars
    get, unk, eos = tokenizer.index.get, tokenizer.unk_id, tokenizer.eos_id

    def encode_lines(text: str) -> np.ndarray:
        ids: list[int] = []
        for line in text.splitlines():
            ids.extend(map(get, line.split(), repeat(unk)))
            ids.append(eos)
        return np.array(ids, dtype=np.int64)

    return encode_lines


def encode_split(tokenizer: Tokenizer, text: str, path: Path) -> torch.Tensor:
    """The ids of a whole text already in memory (e.g. a file given to `lmtrain eval`) as a long tensor."""
    try:
        return torch.from_numpy(chunk_encoder(tokenizer)(text))
    except DataError as error:
        raise DataError(f"{path}: {error}") from None


def encode_file(tokenizer: Tokenizer, path: Path, output: Path, errors: str, what: str) -> None:
    """Stream `path` through the tokenizer into a flat binary array of ids at `output`."""
    dtype = id_dtype(tokenizer.vocab_size)
    blocks = (
        iter_text(path, errors, what) if tokenizer.kind == "char" else iter_lines_blocks(path, errors, what)
    )
    encode = chunk_encoder(tokenizer)
    has_text = False
    with atomic_output(output) as temporary, open(temporary, "wb") as out:
        for text in blocks:
            has_text = has_text or not text.isspace()
            try:
                encode(text).astype(dtype).tofile(out)
            except DataError as error:
                raise DataError(f"{path}: {error}") from None
        if not has_text:
            raise empty_file_error(path, what)


def cached_ids(tokenizer: Tokenizer, vocab_key: str, path: Path, errors: str, what: str, cache: Path):
    """The ids of `path` as a read-only memory-mapped array, tokenized on first use."""
    dtype = id_dtype(tokenizer.vocab_size)
    key = hashlib.sha256(f"{CACHE_FORMAT}:{file_sha256(path)}:{vocab_key}:{errors}".encode()).hexdigest()[:32]
    output = cache / "tokens" / f"{key}.u{8 * dtype.itemsize}"
    if not output.exists():
        encode_file(tokenizer, path, output, errors, what)
    return np.memmap(output, dtype=dtype, mode="r")


def as_long_tensor(ids: np.ndarray) -> torch.Tensor:
    """An int64 tensor copy of stored ids (uint16 or uint32, usually memory-mapped)."""
    return torch.from_numpy(np.asarray(ids, dtype=np.int64))


def load_corpus(data: DataConfig, cache: Path | None = None) -> Corpus:
    """Read the splits, build the tokenizer on train, and encode all splits (all of it cached)."""
    cache = cache or cache_dir()
    paths = split_paths(data, cache)
    for path, what in ((paths.train, "training file"), (paths.valid, "validation file")):
        check_text_file(path, what)
    if paths.test is not None:
        check_text_file(paths.test, "test file")
    tokenizer, vocab_key = cached_tokenizer(data, paths.train, cache)

    def ids(path: Path, what: str) -> np.ndarray:
        stored = cached_ids(tokenizer, vocab_key, path, data.errors, what, cache)
        return stored if data.max_tokens is None else stored[: data.max_tokens]  # still a mapped view

    return Corpus(
        tokenizer=tokenizer,
        train_ids=ids(paths.train, "training file"),
        valid_ids=ids(paths.valid, "validation file"),
        test_ids=ids(paths.test, "test file") if paths.test is not None else None,
    )


UNIGRAM_CHUNK = 1 << 24
"""Ids counted at a time by `unigram_perplexity`, so that a memory-mapped split is never loaded whole."""


def unigram_perplexity(
    train: np.ndarray | torch.Tensor, valid: np.ndarray | torch.Tensor, vocab_size: int
) -> float:
    """Perplexity of `valid` under the add-one-smoothed unigram distribution of `train`.

    The baseline a language model must beat: it knows word frequencies but no context.
    """
    train, valid = np.asarray(train), np.asarray(valid)
    counts = np.ones(vocab_size, dtype=np.float64)
    for start in range(0, len(train), UNIGRAM_CHUNK):
        counts += np.bincount(train[start : start + UNIGRAM_CHUNK], minlength=vocab_size)
    log_probs = np.log(counts / counts.sum())
    total = sum(
        float(log_probs[valid[start : start + UNIGRAM_CHUNK]].sum())
        for start in range(0, len(valid), UNIGRAM_CHUNK)
    )
    return float(np.exp(-total / len(valid)))
