"""Reading corpus files, building the vocabulary on train only, and the unigram baseline."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lmtrain.config import DataConfig
from lmtrain.data import corpus as corpus_module
from lmtrain.data import text as text_module
from lmtrain.data.corpus import load_corpus, unigram_perplexity
from lmtrain.data.text import read_text
from lmtrain.data.tokenizer import CharTokenizer, WordTokenizer
from lmtrain.errors import DataError


def _files(tmp_path: Path, train: str, valid: str, test: str | None = None) -> dict:
    paths = {"train": tmp_path / "train.txt", "valid": tmp_path / "valid.txt"}
    paths["train"].write_text(train, encoding="utf-8")
    paths["valid"].write_text(valid, encoding="utf-8")
    if test is not None:
        paths["test"] = tmp_path / "test.txt"
        paths["test"].write_text(test, encoding="utf-8")
    return paths


# ---------------------------------------------------------------- read_text


def test_read_text_returns_the_text(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("héllo\nworld\n", encoding="utf-8")
    assert read_text(path) == "héllo\nworld\n"


def test_read_text_missing(tmp_path):
    path = tmp_path / "missing.txt"
    with pytest.raises(DataError) as info:
        read_text(path, "training file")
    assert str(info.value) == f"training file {path} does not exist; check the path in the config"


def test_read_text_directory(tmp_path):
    with pytest.raises(DataError, match="is a directory; point the config at a text file"):
        read_text(tmp_path)


@pytest.mark.parametrize("content", [b"", b"  \n\n\t\n"], ids=["zero-bytes", "whitespace"])
def test_read_text_empty(tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        read_text(path, "validation file")
    assert str(info.value) == f"validation file {path} is empty; it needs some text"


def test_read_text_undecodable_names_byte_and_offset(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"abc\xffdef")
    with pytest.raises(DataError) as info:
        read_text(path)
    message = str(info.value)
    assert message.startswith(f"text file {path} is not UTF-8: undecodable byte 0xff at byte offset 3;")
    assert "iconv" in message


def test_read_text_offset_counts_bytes_not_characters(tmp_path):
    path = tmp_path / "mixed.txt"
    path.write_bytes("é€".encode() + b"\xe9x")  # 2 + 3 bytes of valid UTF-8, then Latin-1 é
    with pytest.raises(DataError, match=r"undecodable byte 0xe9 at byte offset 5;"):
        read_text(path)


# ---------------------------------------------------------------- load_corpus


def test_word_corpus_vocabulary_from_train_only(tmp_path):
    paths = _files(tmp_path, "the cat sat\nthe dog sat\n", "the bird sat\nthe cat\n", "a dog\n")
    corpus = load_corpus(DataConfig(**paths))
    assert isinstance(corpus.tokenizer, WordTokenizer)
    assert corpus.tokenizer.tokens == ["<unk>", "<eos>", "sat", "the", "cat", "dog"]
    assert corpus.train.dtype == torch.long
    assert corpus.train.tolist() == [3, 4, 2, 1, 3, 5, 2, 1]
    assert corpus.valid.tolist() == [3, 0, 2, 1, 3, 4, 1]  # "bird" is only in valid: <unk>
    assert corpus.test.tolist() == [0, 5, 1]


def test_word_corpus_min_freq_and_no_test(tmp_path):
    paths = _files(tmp_path, "the cat sat\nthe dog sat\n", "the dog\n")
    corpus = load_corpus(DataConfig(**paths, min_freq=2))
    assert corpus.tokenizer.tokens == ["<unk>", "<eos>", "sat", "the"]
    assert corpus.valid.tolist() == [3, 0, 1]
    assert corpus.test is None


def test_char_corpus(tmp_path):
    paths = _files(tmp_path, "abba\n", "baa\n")
    corpus = load_corpus(DataConfig(**paths, tokenizer="char"))
    assert isinstance(corpus.tokenizer, CharTokenizer)
    assert corpus.tokenizer.tokens == ["\n", "a", "b"]
    assert corpus.train.tolist() == [1, 2, 2, 1, 0]
    assert corpus.valid.tolist() == [2, 1, 1, 0]


def test_char_corpus_with_a_valid_only_character_names_file_and_character(tmp_path):
    paths = _files(tmp_path, "abba\n", "abc\n")
    with pytest.raises(DataError) as info:
        load_corpus(DataConfig(**paths, tokenizer="char"))
    message = str(info.value)
    assert message.startswith(f"{paths['valid']}: 1 character(s) are not in the vocabulary")
    assert "'c'" in message


def test_load_corpus_reports_which_split_is_missing(tmp_path):
    paths = _files(tmp_path, "a b\n", "a\n")
    paths["test"] = tmp_path / "test.txt"
    with pytest.raises(DataError, match=rf"^test file {paths['test']} does not exist"):
        load_corpus(DataConfig(**paths))


# ---------------------------------------------------------------- unigram baseline


def test_unigram_perplexity_matches_hand_computation():
    # Train counts over a vocabulary of 4: [1, 2, 1, 0]; add-one: [2, 3, 2, 1] / 8.
    train = torch.tensor([0, 1, 1, 2])
    valid = torch.tensor([1, 3])
    expected = math.exp(-(math.log(3 / 8) + math.log(1 / 8)) / 2)
    assert unigram_perplexity(train, valid, vocab_size=4) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(4.618802153517006, rel=1e-12)


def test_unigram_perplexity_of_uniform_counts_is_vocab_size():
    train = torch.tensor([0, 1, 2, 3, 4])
    assert unigram_perplexity(train, torch.tensor([0, 2, 4, 4]), vocab_size=5) == pytest.approx(5.0)


# ---------------------------------------------------------------- streaming, at every chunk boundary

STREAM_TEXT = "Ünïcödé wörds\r\nand € signs\n\nthe end без перевода строки"


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 1 << 20])
@pytest.mark.parametrize("kind", ["char", "word"])
def test_streamed_tokenization_equals_whole_text(tmp_path, monkeypatch, chunk, kind):
    monkeypatch.setattr(text_module, "TEXT_CHUNK_BYTES", chunk)
    paths = _files(tmp_path, STREAM_TEXT, STREAM_TEXT[:20])
    result = load_corpus(DataConfig(**paths, tokenizer=kind), cache=tmp_path / "cache")
    reference = (
        CharTokenizer.build(STREAM_TEXT) if kind == "char" else WordTokenizer.build(STREAM_TEXT.splitlines())
    )
    assert result.tokenizer.tokens == reference.tokens
    assert result.train.tolist() == reference.encode(STREAM_TEXT)
    assert result.valid.tolist() == reference.encode(STREAM_TEXT[:20])


@pytest.mark.parametrize("chunk", [1, 2, 4, 1 << 20])
def test_undecodable_byte_offset_is_exact_across_chunks(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(text_module, "TEXT_CHUNK_BYTES", chunk)
    path = tmp_path / "mixed.txt"
    path.write_bytes("é€".encode() + b"\xe9x")  # 5 bytes of valid UTF-8, then Latin-1 é
    with pytest.raises(
        DataError, match=r"undecodable byte 0xe9 at byte offset 5;.*or set data.errors=replace"
    ):
        read_text(path)


def test_errors_replace_reads_bad_bytes_as_replacement_characters(tmp_path):
    paths = _files(tmp_path, "ab\n", "ab\n")
    paths["train"].write_bytes(b"ab\xff\n")
    with pytest.raises(
        DataError, match="training file .* is not UTF-8: undecodable byte 0xff at byte offset 2"
    ):
        load_corpus(DataConfig(**paths, tokenizer="char"), cache=tmp_path / "cache")
    corpus = load_corpus(DataConfig(**paths, tokenizer="char", errors="replace"), cache=tmp_path / "cache")
    assert corpus.tokenizer.tokens == ["\n", "a", "b", "\ufffd"]


# ---------------------------------------------------------------- the token cache


def test_second_load_comes_from_the_cache(tmp_path, monkeypatch):
    paths = _files(tmp_path, "the cat sat\nthe dog sat\n", "the bird sat\n")
    data = DataConfig(**paths)
    first = load_corpus(data, cache=tmp_path / "cache")
    cached = sorted((tmp_path / "cache" / "tokens").iterdir())
    assert [path.suffix for path in cached] == [".u16", ".u16"]

    def fail(*args, **kwargs):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(corpus_module, "build_tokenizer", fail)
    monkeypatch.setattr(corpus_module, "encode_file", fail)
    second = load_corpus(data, cache=tmp_path / "cache")
    assert second.tokenizer.tokens == first.tokenizer.tokens
    assert torch.equal(second.train, first.train) and torch.equal(second.valid, first.valid)


def test_changed_text_or_settings_are_not_served_stale_ids(tmp_path):
    paths = _files(tmp_path, "the cat sat\nthe dog sat\n", "the dog sat\n")
    cache = tmp_path / "cache"
    assert load_corpus(DataConfig(**paths), cache=cache).valid.tolist() == [3, 5, 2, 1]
    assert load_corpus(DataConfig(**paths, min_freq=2), cache=cache).valid.tolist() == [3, 0, 2, 1]
    paths["valid"].write_text("the cat\n", encoding="utf-8")
    assert load_corpus(DataConfig(**paths), cache=cache).valid.tolist() == [3, 4, 1]


def test_large_vocabulary_is_stored_as_uint32(tmp_path):
    words = " ".join(f"w{i}" for i in range(70_000)) + "\n"
    paths = _files(tmp_path, words, "w5 w69999 unseen\n")
    corpus = load_corpus(DataConfig(**paths), cache=tmp_path / "cache")
    assert corpus.tokenizer.vocab_size == 70_002
    assert {path.suffix for path in (tmp_path / "cache" / "tokens").iterdir()} == {".u32"}
    assert corpus.valid.tolist() == [corpus.tokenizer.index["w5"], corpus.tokenizer.index["w69999"], 0, 1]
    assert corpus.train.dtype == torch.long


def test_max_tokens_truncates_every_split_but_not_the_vocabulary(tmp_path):
    paths = _files(tmp_path, "a b c d e f\n", "f e d c\n", "b b b\n")
    corpus = load_corpus(DataConfig(**paths, max_tokens=2), cache=tmp_path / "cache")
    assert corpus.tokenizer.vocab_size == 8
    assert [len(ids) for ids in (corpus.train, corpus.valid, corpus.test)] == [2, 2, 2]


# ---------------------------------------------------------------- one file with data.split


def test_one_file_is_split_by_character_fractions(tmp_path):
    path = tmp_path / "all.txt"
    path.write_text("".join(f"line {i}\n" for i in range(100)), encoding="utf-8")  # 790 characters
    corpus = load_corpus(DataConfig(file=path, split=[0.8, 0.1, 0.1], tokenizer="char"), cache=tmp_path / "c")
    assert [len(ids) for ids in (corpus.train, corpus.valid, corpus.test)] == [632, 79, 79]
    decoded = "".join(
        corpus.tokenizer.decode(ids.tolist()) for ids in (corpus.train, corpus.valid, corpus.test)
    )
    assert decoded == path.read_text(encoding="utf-8")
    two = load_corpus(DataConfig(file=path, split=[0.5, 0.5], tokenizer="char"), cache=tmp_path / "c")
    assert two.test is None and len(two.valid) == 395


def test_split_of_a_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"data.file .*missing.txt does not exist"):
        load_corpus(DataConfig(file=tmp_path / "missing.txt", split=[0.9, 0.1]), cache=tmp_path / "c")


def test_unigram_perplexity_counts_a_mapped_split_in_chunks_with_the_same_result(monkeypatch):
    generator = np.random.default_rng(0)
    train, valid = generator.integers(0, 50, 10_007).astype(np.uint16), generator.integers(0, 50, 999)
    whole = unigram_perplexity(torch.from_numpy(train.astype(np.int64)), torch.from_numpy(valid), 50)
    monkeypatch.setattr(corpus_module, "UNIGRAM_CHUNK", 128)
    assert unigram_perplexity(train, valid, 50) == pytest.approx(whole, rel=1e-12)
