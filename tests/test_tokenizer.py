"""Tokenizers: exact ids, exact vocabulary order, round trips and the errors users see."""

import pytest

from lmtrain.data.tokenizer import EOS, UNK, CharTokenizer, WordTokenizer, tokenizer_from_dict
from lmtrain.errors import CheckpointError, DataError

TRAIN_LINES = ["the cat sat", "the dog sat", "a cat"]
# Counts: cat 2, sat 2, the 2, a 1, dog 1 -> most frequent first, ties alphabetical.
VOCAB = [UNK, EOS, "cat", "sat", "the", "a", "dog"]


@pytest.fixture
def words() -> WordTokenizer:
    return WordTokenizer.build(TRAIN_LINES)


# ---------------------------------------------------------------- word tokenizer


def test_word_vocabulary_order_most_frequent_first_ties_alphabetical(words):
    assert words.tokens == VOCAB
    assert words.unk_id == 0 and words.eos_id == 1
    assert words.index[UNK] == 0 and words.index[EOS] == 1
    assert words.vocab_size == 7


def test_word_encode_puts_one_eos_at_each_line_end(words):
    assert words.encode("the cat sat\nthe dog sat\na cat\n") == [4, 2, 3, 1, 4, 6, 3, 1, 5, 2, 1]
    assert words.encode_line("dog a") == [6, 5, 1]
    # An empty line still ends with <eos>; a last line without "\n" gets one too.
    assert words.encode("cat\n\nsat") == [2, 1, 1, 3, 1]
    assert words.encode("") == []


def test_word_encode_words_has_no_eos(words):
    assert words.encode_words("the cat") == [4, 2]
    assert words.encode_words("the zebra\n") == [4, 0]


def test_unseen_words_map_to_unk(words):
    assert words.encode("the zebra sat on a mat\n") == [4, 0, 3, 0, 5, 0, 1]
    assert words.unknown_tokens("the zebra sat on zebra mat") == ["zebra", "on", "mat"]
    # <unk> written in the text (as in PTB) is the <unk> token itself.
    assert words.encode(f"the {UNK}\n") == [4, 0, 1]


@pytest.mark.parametrize(
    "text",
    ["the cat sat\nthe dog sat\na cat\n", "a\n", "dog dog dog\n\ncat\n", "the cat\nsat\n"],
)
def test_word_round_trip(words, text):
    assert words.decode(words.encode(text)) == text


def test_word_decode_layout(words):
    assert words.decode([2, 3]) == "cat sat"
    assert words.decode([2, 1, 3]) == "cat\nsat"
    assert words.decode([1, 1]) == "\n\n"
    assert words.decode([]) == ""
    assert words.decode([0, 2, 1]) == f"{UNK} cat\n"


def test_vocabulary_is_built_from_train_only():
    tokenizer = WordTokenizer.build(["a b", "b"])
    assert tokenizer.tokens == [UNK, EOS, "b", "a"]
    # "c" occurs only in validation text: it is <unk>, and the vocabulary did not grow.
    assert tokenizer.encode("a c b\n") == [3, 0, 2, 1]
    assert tokenizer.vocab_size == 4


def test_unk_and_eos_in_training_text_are_not_counted_twice():
    tokenizer = WordTokenizer.build([f"{UNK} {UNK} {EOS} x"])
    assert tokenizer.tokens == [UNK, EOS, "x"]


def test_min_freq_cuts_rare_words():
    tokenizer = WordTokenizer.build(TRAIN_LINES, min_freq=2)
    assert tokenizer.tokens == [UNK, EOS, "cat", "sat", "the"]
    assert tokenizer.encode("a cat\nthe dog sat\n") == [0, 2, 1, 4, 0, 3, 1]


def test_max_vocab_counts_unk_and_eos():
    tokenizer = WordTokenizer.build(TRAIN_LINES, max_vocab=4)
    assert tokenizer.tokens == [UNK, EOS, "cat", "sat"]
    assert tokenizer.encode("the cat sat\n") == [0, 2, 3, 1]


def test_min_freq_and_max_vocab_together():
    tokenizer = WordTokenizer.build(["x x x y y y z z w"], min_freq=2, max_vocab=4)
    assert tokenizer.tokens == [UNK, EOS, "x", "y"]


def test_empty_vocabulary_after_min_freq_is_a_data_error():
    with pytest.raises(DataError, match=r"min_freq=3") as info:
        WordTokenizer.build(TRAIN_LINES, min_freq=3)
    assert "vocabulary is empty" in str(info.value)
    assert "data.min_freq" in str(info.value)


def test_word_vocabulary_must_start_with_unk_and_eos():
    with pytest.raises(ValueError, match="starts with"):
        WordTokenizer(["cat", UNK, EOS])


def test_word_decode_token_spacing(words):
    assert words.decode_token(2, is_first=True) == "cat"
    assert words.decode_token(3) == " sat"
    assert words.decode_token(1) == "\n"
    assert words.decode_token(1, is_first=True) == "\n"
    # A stream of decode_token calls, starting a new line after each <eos>, gives decode's text.
    ids = [4, 2, 3, 1, 5, 2, 1]
    pieces, first = [], True
    for token_id in ids:
        pieces.append(words.decode_token(token_id, is_first=first))
        first = token_id == words.eos_id
    assert "".join(pieces) == words.decode(ids) == "the cat sat\na cat\n"


# ---------------------------------------------------------------- char tokenizer


def test_char_vocabulary_is_sorted_characters():
    chars = CharTokenizer.build("hello world\n")
    assert chars.tokens == ["\n", " ", "d", "e", "h", "l", "o", "r", "w"]
    assert chars.encode("hello\n") == [4, 3, 5, 5, 6, 0]


@pytest.mark.parametrize("text", ["hello world\n", "low\nrow\n", "", "  \n\n"])
def test_char_round_trip(text):
    chars = CharTokenizer.build("hello world\n")
    assert chars.decode(chars.encode(text)) == text


def test_char_decode_token_has_no_spacing():
    chars = CharTokenizer.build("ab\n")
    assert [chars.decode_token(i, is_first=i == 0) for i in range(3)] == ["\n", "a", "b"]


def test_char_unknown_characters_raise_data_error_naming_them():
    chars = CharTokenizer.build("hello world\n")
    with pytest.raises(DataError) as info:
        chars.encode("hallo wörld")
    message = str(info.value)
    assert message.startswith("2 character(s) are not in the vocabulary")
    assert "'a', 'ö'" in message
    assert chars.unknown_tokens("hallo wörld") == ["a", "ö"]


def test_char_many_unknown_characters_are_abbreviated():
    chars = CharTokenizer.build("a")
    with pytest.raises(DataError, match=r"\.\.\. \(12 in all\)"):
        chars.encode("bcdefghijklm")


# ---------------------------------------------------------------- serialization


@pytest.mark.parametrize(
    "tokenizer",
    [WordTokenizer.build(TRAIN_LINES), CharTokenizer.build("hello world\n")],
    ids=["word", "char"],
)
def test_to_dict_round_trip(tokenizer):
    data = tokenizer.to_dict()
    assert data == {"kind": tokenizer.kind, "tokens": tokenizer.tokens}
    rebuilt = tokenizer_from_dict(data)
    assert type(rebuilt) is type(tokenizer)
    assert rebuilt.tokens == tokenizer.tokens
    text = "the cat sat\n" if tokenizer.kind == "word" else "hello\n"
    assert rebuilt.encode(text) == tokenizer.encode(text)


def test_to_dict_is_a_copy():
    tokenizer = WordTokenizer.build(TRAIN_LINES)
    tokenizer.to_dict()["tokens"].append("extra")
    assert tokenizer.tokens == VOCAB


@pytest.mark.parametrize(
    "data",
    [
        None,
        ["word", [UNK, EOS]],
        {},
        {"kind": "bpe", "tokens": [UNK, EOS]},
        {"kind": "word"},
        {"kind": "word", "tokens": "abc"},
        {"kind": "char", "tokens": ["a", 1]},
    ],
    ids=["none", "list", "empty", "unknown-kind", "no-tokens", "tokens-str", "tokens-int"],
)
def test_malformed_dict_raises_checkpoint_error(data):
    with pytest.raises(CheckpointError, match="tokenizer entry is malformed"):
        tokenizer_from_dict(data)


@pytest.mark.parametrize("tokens", [[], ["cat", "sat"]], ids=["empty", "no-specials"])
def test_word_dict_without_specials_raises_checkpoint_error(tokens):
    with pytest.raises(CheckpointError):
        tokenizer_from_dict({"kind": "word", "tokens": tokens})
