"""Tokenizers: text <-> integer ids, for character- and word-level models.

- `CharTokenizer`: one token per character; the vocabulary is the characters of the training text.
- `WordTokenizer`: whitespace-separated words, an `<eos>` token at each line end, and `<unk>` for
  words outside the vocabulary (rare words are cut to `<unk>` by `min_freq` and `max_vocab`).

Both are built from the training split only, and both serialize to a plain dict (`to_dict`) that
is stored inside checkpoints, so sampling never needs the training data again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from lmtrain.errors import CheckpointError, DataError

EOS = "<eos>"
UNK = "<unk>"


class CharTokenizer:
    """Characters to ids. Ids follow the sorted order of the characters."""

    kind = "char"

    def __init__(self, tokens: list[str]):
        self.tokens = list(tokens)
        self.index = {token: i for i, token in enumerate(self.tokens)}

    @classmethod
    def build(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.index[char] for char in text]
        except KeyError:
            unknown = sorted(set(text) - self.index.keys())
            raise DataError(
                f"{len(unknown)} character(s) are not in the vocabulary of the training text: "
                f"{format_tokens(unknown)}; add them to the training text, or remove them"
            ) from None

    def unknown_tokens(self, text: str) -> list[str]:
        """Characters of `text` the vocabulary lacks, in sorted order."""
        return sorted(set(text) - self.index.keys())

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.tokens[i] for i in ids)

    def decode_token(self, token_id: int, is_first: bool = False) -> str:
        """The text of one token as it appears in a stream of generated text."""
        return self.tokens[token_id]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "tokens": list(self.tokens)}


class WordTokenizer:
    """Whitespace words to ids, with `<unk>` (id 0) and `<eos>` (id 1) first."""

    kind = "word"

    def __init__(self, tokens: list[str]):
        if tokens[:2] != [UNK, EOS]:
            raise ValueError(f"a word vocabulary starts with {UNK} and {EOS}")
        self.tokens = list(tokens)
        self.index = {token: i for i, token in enumerate(self.tokens)}
        self.unk_id = 0
        self.eos_id = 1

    @classmethod
    def build(cls, lines: Iterable[str], min_freq: int = 1, max_vocab: int | None = None) -> WordTokenizer:
        """Count the words of the training lines; keep the frequent ones, most frequent first."""
        return cls.from_counts(Counter(word for line in lines for word in line.split()), min_freq, max_vocab)

    @classmethod
    def from_counts(cls, counts: Counter, min_freq: int = 1, max_vocab: int | None = None) -> WordTokenizer:
        """The vocabulary of word counts (counted in one streamed pass over a large file)."""
        kept = [word for word, count in counts.items() if count >= min_freq and word not in (UNK, EOS)]
        # Most frequent first, ties broken alphabetically, so the vocabulary is deterministic.
        kept.sort(key=lambda word: (-counts[word], word))
        if max_vocab is not None:
            kept = kept[: max(max_vocab - 2, 0)]
        if not kept:
            raise DataError(
                f"the word vocabulary is empty: no word of the training text occurs at least "
                f"min_freq={min_freq} times; lower data.min_freq or use more training text"
            )
        return cls([UNK, EOS, *kept])

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def encode_line(self, line: str) -> list[int]:
        """The ids of one line's words followed by `<eos>`; unknown words become `<unk>`."""
        return [self.index.get(word, self.unk_id) for word in line.split()] + [self.eos_id]

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for line in text.splitlines():
            ids.extend(self.encode_line(line))
        return ids

    def encode_words(self, text: str) -> list[int]:
        """The ids of the words of `text`, without an `<eos>` at the end (for prompts)."""
        return [self.index.get(word, self.unk_id) for word in text.split()]

    def unknown_tokens(self, text: str) -> list[str]:
        """Words of `text` outside the vocabulary, in order of first appearance."""
        return list(dict.fromkeys(word for word in text.split() if word not in self.index))

    def decode(self, ids: Iterable[int]) -> str:
        """Words joined by spaces; each `<eos>` becomes a line break."""
        lines, words = [], []
        for token_id in ids:
            if token_id == self.eos_id:
                lines.append(" ".join(words))
                words = []
            else:
                words.append(self.tokens[token_id])
        text = "\n".join(lines)
        if words:
            text += ("\n" if lines else "") + " ".join(words)
        elif lines:
            text += "\n"
        return text

    def decode_token(self, token_id: int, is_first: bool = False) -> str:
        """The text of one token in a stream: a space before each word except at a line start."""
        if token_id == self.eos_id:
            return "\n"
        return ("" if is_first else " ") + self.tokens[token_id]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "tokens": list(self.tokens)}


Tokenizer = CharTokenizer | WordTokenizer

TOKENIZERS = {"char": CharTokenizer, "word": WordTokenizer}


def tokenizer_from_dict(data: dict) -> Tokenizer:
    """Rebuild a tokenizer stored by `to_dict` (for example inside a checkpoint)."""
    kind = data.get("kind") if isinstance(data, dict) else None
    tokens = data.get("tokens") if isinstance(data, dict) else None
    malformed = CheckpointError(
        "the checkpoint's tokenizer entry is malformed; the file is damaged or not lmtrain's"
    )
    if kind not in TOKENIZERS or not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise malformed
    try:
        return TOKENIZERS[kind](tokens)
    except ValueError:
        raise malformed from None


def format_tokens(tokens: list[str], limit: int = 10) -> str:
    """A short printable list of tokens: `'é', '\\t', ... (12 in all)`."""
    shown = ", ".join(repr(token) for token in tokens[:limit])
    return shown + (f", ... ({len(tokens)} in all)" if len(tokens) > limit else "")
