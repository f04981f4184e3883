"""Scoring: log P of a text equals the sum of per-token log-probabilities taken by hand from the softmax."""

from __future__ import annotations

import math

import pytest
import torch

from lmtrain.data.tokenizer import EOS, CharTokenizer
from lmtrain.errors import ConfigError
from lmtrain.generation.scoring import format_scores, ranking, score_texts, scored_sequence, scores_to_dict

from helpers import CHARS, WORDS, by_hand, crafted_model, random_model


def test_word_score_is_the_sum_of_per_token_log_probs_from_the_softmax():
    model = random_model()
    (score,) = score_texts(model, WORDS, ["a b c"])
    ids = [WORDS.index[word] for word in "a b c".split()]
    expected = by_hand(model, [WORDS.eos_id, *ids, WORDS.eos_id])
    forward = score.forward
    assert forward.tokens == ["a", "b", "c", EOS]  # the final <eos> is scored; the opening one is context
    torch.testing.assert_close(forward.log_probs, expected, rtol=1e-5, atol=1e-6)
    assert forward.log_prob == pytest.approx(sum(expected), rel=1e-5)
    assert forward.log2_prob == pytest.approx(sum(expected) / math.log(2), rel=1e-5)
    assert forward.mean_log_prob == pytest.approx(sum(expected) / 4, rel=1e-5)
    assert forward.perplexity == pytest.approx(math.exp(-sum(expected) / 4), rel=1e-5)


def test_batched_scores_equal_scores_of_each_text_alone():
    model = random_model()
    texts = ["a", "f e d c b a", "b b\nc", "d e"]  # different lengths share one padded batch
    together = score_texts(model, WORDS, texts)
    for text, score in zip(texts, together, strict=True):
        (alone,) = score_texts(model, WORDS, [text])
        torch.testing.assert_close(score.forward.log_probs, alone.forward.log_probs, rtol=1e-5, atol=1e-6)
    assert together[2].forward.tokens == ["b", "b", EOS, "c", EOS]


def test_character_score_reads_after_a_line_break_and_scores_the_final_one():
    model = random_model(CHARS.vocab_size)
    (score,) = score_texts(model, CHARS, ["ab c"])
    assert score.forward.tokens == ["a", "b", " ", "c", "\n"]
    sequence = [CHARS.index[c] for c in "\nab c\n"]
    torch.testing.assert_close(score.forward.log_probs, by_hand(model, sequence), rtol=1e-5, atol=1e-6)


def test_without_a_line_break_token_the_first_character_is_context():
    tokenizer = CharTokenizer.build("abc")
    assert scored_sequence(tokenizer, "cab") == [2, 0, 1]
    (score,) = score_texts(random_model(3), tokenizer, ["cab"])
    assert score.forward.tokens == ["a", "b"]
    with pytest.raises(ConfigError, match="nothing is left to score"):
        scored_sequence(tokenizer, "a")


def test_texts_are_ranked_most_probable_first():
    model = crafted_model([0.0, 0.0, -2.0, 0.0, 3.0, 0.0, 0.0, 0.0])  # "c" likely, "a" unlikely
    scores = score_texts(model, WORDS, ["a a", "c c", "a c"])
    assert ranking(scores) == [1, 2, 0]
    report = scores_to_dict(scores, "word", per_token=True)
    assert [entry["rank"] for entry in report["inputs"]] == [3, 1, 2]
    first = report["inputs"][0]
    assert [entry["token"] for entry in first["per_token"]] == ["a", "a", EOS]
    assert sum(entry["log_prob"] for entry in first["per_token"]) == pytest.approx(first["log_prob"])
    assert math.prod(entry["prob"] for entry in first["per_token"]) == pytest.approx(
        math.exp(first["log_prob"])
    )
    table = format_scores(scores, "word", per_token=True).splitlines()
    assert table[0].split()[:2] == ["rank", "log"]
    assert table[1].split()[0] == "1" and table[1].endswith("c c")
    assert "1. c c" in table and "3. a a" in table


@torch.no_grad()
def backward_by_hand(model, sequence: list[int]) -> list[float]:
    """log P(s[t] | s[t+1:]) for t <= n - 2, each from the backward model reading s[n-1], ..., s[t+1]."""
    log_probs = []
    for t in range(len(sequence) - 1):
        logits, _ = model.backward_logits(torch.tensor(sequence[t + 1 :]).view(-1, 1))  # [n-1-t, 1, V]
        probabilities = torch.softmax(logits[0, 0].double(), dim=0)  # entry 0: the token before s[t+1]
        log_probs.append(math.log(float(probabilities[sequence[t]])))
    return log_probs


def test_a_bidirectional_model_also_scores_right_to_left():
    model = random_model(bidirectional=True)
    texts = ["a b c", "f", "e d c b a f e"]  # different lengths: padding must not reach the backward reads
    scores = score_texts(model, WORDS, texts)
    for text, score in zip(texts, scores, strict=True):
        sequence = [WORDS.eos_id, *(WORDS.index[word] for word in text.split()), WORDS.eos_id]
        assert score.backward.tokens == [EOS, *text.split()]  # the closing <eos> is its context
        torch.testing.assert_close(
            score.backward.log_probs, backward_by_hand(model, sequence), rtol=1e-5, atol=1e-6
        )
        torch.testing.assert_close(score.forward.log_probs, by_hand(model, sequence), rtol=1e-5, atol=1e-6)
        assert len(score.backward.log_probs) == len(score.forward.log_probs)
    assert score_texts(random_model(), WORDS, ["a b"])[0].backward is None
    report = scores_to_dict(scores, "word", per_token=True)
    assert report["inputs"][0]["backward"]["tokens"] == 4
    table = format_scores(scores, "word", per_token=True).splitlines()
    assert "backward log P" in table[0] and "backward ppl" in table[0]
    rows = table[table.index(f"{ranking(scores).index(0) + 1}. a b c") + 2 :][:5]
    assert rows[0].split()[:3] == ["<eos>", "-", "-"]  # the opening <eos>: forward context, backward scored
    assert rows[-1].split()[-2:] == ["-", "-"]  # the closing <eos>: forward scored, backward context


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_empty_input_is_a_clear_error(text):
    with pytest.raises(ConfigError, match="the input is empty"):
        score_texts(random_model(), WORDS, [text])
    with pytest.raises(ConfigError, match="input 2 is empty"):
        score_texts(random_model(), WORDS, ["a", text])


def test_no_input_is_a_clear_error():
    with pytest.raises(ConfigError, match="nothing to score"):
        score_texts(random_model(), WORDS, [])


def test_unknown_words_are_named_mapped_or_skipped():
    model = random_model()
    with pytest.raises(ConfigError, match="the input has words outside the model's vocabulary: 'zebra'"):
        score_texts(model, WORDS, ["a zebra"])
    (mapped,) = score_texts(model, WORDS, ["a zebra"], unknown="map")
    assert mapped.forward.tokens == ["a", "<unk>", EOS]
    (skipped,) = score_texts(model, WORDS, ["a zebra"], unknown="skip")
    assert skipped.forward.tokens == ["a", EOS]
