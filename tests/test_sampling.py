"""Generation: seeds, top-k, top-p, greedy, <unk> rejection, stopping, prompts, option checks.

Distribution tests use a crafted model whose decoder weight is zero, so that every step's logits
are the decoder bias we set, whatever the input and state: the allowed set and the probabilities
of each option are then known exactly.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from lmtrain.config import ModelConfig
from lmtrain.data.tokenizer import EOS, UNK, CharTokenizer
from lmtrain.errors import ConfigError
from lmtrain.generation.sampling import (
    SamplingOptions,
    check_sample_request,
    draw,
    encode_text,
    generate,
    generate_steps,
    render,
    restrict_logits,
)
from lmtrain.model import RNNLanguageModel

from helpers import CHARS, WORDS, crafted_model, random_model


def frequencies(samples: list[list[int]]) -> dict[int, float]:
    counts = Counter(token for sample in samples for token in sample)
    total = sum(counts.values())
    return {token: count / total for token, count in counts.items()}


def sample_many(model: RNNLanguageModel, options: SamplingOptions, samples: int = 500, length: int = 8):
    return generate(model, WORDS, length, options, num_samples=samples, seed=1, stop_at_eos=False)


LOGITS = [0.1, 0.5, 2.0, 1.5, 1.0, -1.0, 0.3, 0.0]


def renormalised(logits: list[float], allowed: set[int], temperature: float = 1.0) -> dict[int, float]:
    weights = {i: math.exp(z / temperature) for i, z in enumerate(logits) if i in allowed}
    total = sum(weights.values())
    return {i: w / total for i, w in weights.items()}


def assert_distribution(observed: dict[int, float], expected: dict[int, float], tolerance: float = 0.03):
    assert set(observed) <= set(expected), f"tokens outside the allowed set: {set(observed) - set(expected)}"
    for token, probability in expected.items():
        assert observed.get(token, 0.0) == pytest.approx(probability, abs=tolerance), token


def test_same_seed_same_text_and_other_seeds_differ():
    model = random_model()
    first = generate(model, WORDS, 30, num_samples=4, seed=5, stop_at_eos=False)
    assert first == generate(model, WORDS, 30, num_samples=4, seed=5, stop_at_eos=False)
    assert first != generate(model, WORDS, 30, num_samples=4, seed=6, stop_at_eos=False)
    assert len({tuple(sample) for sample in first}) > 1, "the streams of a batch are independent draws"


def test_plain_sampling_follows_the_softmax():
    assert_distribution(
        frequencies(sample_many(crafted_model(LOGITS), SamplingOptions())),
        renormalised(LOGITS, set(range(8))),
    )


def test_temperature_divides_the_logits():
    observed = frequencies(sample_many(crafted_model(LOGITS), SamplingOptions(temperature=0.5)))
    assert_distribution(observed, renormalised(LOGITS, set(range(8)), temperature=0.5))


@pytest.mark.parametrize("k, allowed", [(1, {2}), (3, {2, 3, 4}), (8, set(range(8)))])
def test_top_k_samples_only_the_k_most_probable(k, allowed):
    observed = frequencies(sample_many(crafted_model(LOGITS), SamplingOptions(top_k=k)))
    assert set(observed) <= allowed
    assert_distribution(observed, renormalised(LOGITS, allowed))


# Probabilities sorted: 0.45 (id 2), 0.25 (3), 0.15 (4), 0.06 (5), 0.03 (1), 0.03 (6), 0.02 (0), 0.01 (7).
NUCLEUS = [math.log(p) for p in (0.02, 0.03, 0.45, 0.25, 0.15, 0.06, 0.03, 0.01)]


@pytest.mark.parametrize(
    "p, allowed", [(0.3, {2}), (0.6, {2, 3}), (0.8, {2, 3, 4}), (0.9, {2, 3, 4, 5}), (1.0, set(range(8)))]
)
def test_top_p_samples_only_the_nucleus(p, allowed):
    observed = frequencies(sample_many(crafted_model(NUCLEUS), SamplingOptions(top_p=p)))
    assert set(observed) <= allowed
    assert_distribution(observed, renormalised(NUCLEUS, allowed))


def test_top_k_and_top_p_together_keep_the_intersection():
    observed = frequencies(sample_many(crafted_model(NUCLEUS), SamplingOptions(top_k=2, top_p=0.8)))
    assert_distribution(observed, renormalised(NUCLEUS, {2, 3}))


def test_restrict_logits_masks_exactly():
    logits = torch.tensor([NUCLEUS, LOGITS])
    kept = torch.isfinite(restrict_logits(logits, top_k=3, top_p=0.6))
    assert kept[0].nonzero().flatten().tolist() == [2, 3]
    assert kept[1].nonzero().flatten().tolist() == [2, 3]  # top-p applies to what top-k left, renormalised
    assert torch.equal(restrict_logits(logits), logits)


def test_greedy_is_the_argmax_of_the_model_reading_the_whole_prefix():
    model = random_model(seed=1)  # a seed whose greedy text changes token along the way
    prompt = [WORDS.index[word] for word in "a b".split()]
    (greedy,) = generate(model, WORDS, 15, SamplingOptions(greedy=True), prompt, stop_at_eos=False)
    context = [WORDS.eos_id, *prompt]
    for token in greedy:
        # Re-reading the whole prefix from a zero state must give what incremental steps gave.
        logits, _ = model(torch.tensor(context).view(-1, 1))
        assert token == int(logits[-1, 0].argmax())
        context.append(token)
    assert len(set(greedy)) > 1


def test_no_unk_never_emits_unk_even_when_it_is_the_most_probable():
    logits = [3.0, 0.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.0]
    observed = frequencies(sample_many(crafted_model(logits), SamplingOptions(no_unk=True)))
    assert WORDS.unk_id not in observed
    assert_distribution(observed, renormalised(logits, set(range(1, 8))))
    (greedy,) = generate(crafted_model(logits), WORDS, 3, SamplingOptions(greedy=True, no_unk=True))
    assert greedy == [2, 2, 2]
    assert UNK in WORDS.decode(sample_many(crafted_model(logits), SamplingOptions(), samples=5)[0])


def test_each_sample_of_a_batch_stops_at_its_own_eos():
    model = crafted_model([-9.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])  # <eos> about 1 in 4
    samples = generate(model, WORDS, 40, num_samples=60, seed=3, stop_at_eos=True)
    for sample in samples:
        assert WORDS.eos_id not in sample[:-1]
        assert sample[-1] == WORDS.eos_id or len(sample) == 40
    assert len({len(sample) for sample in samples}) > 3
    steps = list(generate_steps(model, WORDS, 40, num_samples=60, seed=3, stop_at_eos=True))
    assert len(steps) == max(len(sample) for sample in samples)
    assert all(step[i] is None for i, sample in enumerate(samples) for step in steps[len(sample) :])


def test_without_stop_eos_is_a_line_break_and_generation_goes_on():
    model = crafted_model([-9.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    (sample,) = generate(model, WORDS, 60, seed=3, stop_at_eos=False)
    assert len(sample) == 60 and WORDS.eos_id in sample
    assert render(WORDS, sample).count("\n") == sample.count(WORDS.eos_id) + (sample[-1] != WORDS.eos_id)


def test_character_models_generate_too():
    model = random_model(CHARS.vocab_size)
    (sample,) = generate(model, CHARS, 20, SamplingOptions(top_k=2), seed=1)
    assert len(sample) == 20
    assert render(CHARS, sample) == CHARS.decode(sample) + ("" if sample[-1] == CHARS.index["\n"] else "\n")


def test_render_spaces_words_and_breaks_lines_at_eos():
    ids = [WORDS.index[t] for t in ["a", "b", EOS, "c"]]
    assert render(WORDS, ids) == "a b\nc\n"


# ----- option checks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, length, num_samples, unknown, fragment",
    [
        (SamplingOptions(temperature=0), 5, 1, "error", "--temperature must be a number greater than 0"),
        (SamplingOptions(temperature=-1), 5, 1, "error", "--temperature"),
        (SamplingOptions(temperature=float("nan")), 5, 1, "error", "--temperature"),
        (SamplingOptions(temperature=float("inf")), 5, 1, "error", "--temperature"),
        (SamplingOptions(top_k=0), 5, 1, "error", "--top-k must be between 1 and the vocabulary size 8"),
        (SamplingOptions(top_k=9), 5, 1, "error", "(got 9)"),
        (SamplingOptions(top_p=0.0), 5, 1, "error", "--top-p must be in (0, 1]"),
        (SamplingOptions(top_p=1.5), 5, 1, "error", "--top-p"),
        (SamplingOptions(top_p=float("nan")), 5, 1, "error", "--top-p"),
        (SamplingOptions(), 0, 1, "error", "--length must be at least 1"),
        (SamplingOptions(), 5, 0, "error", "--num-samples must be at least 1"),
        (SamplingOptions(greedy=True, temperature=0.5), 5, 1, "error", "--temperature would have no effect"),
        (SamplingOptions(greedy=True, top_k=2, top_p=0.5), 5, 1, "error", "--top-k and --top-p would have"),
        (SamplingOptions(greedy=True), 5, 3, "error", "--num-samples 3 would repeat it"),
        (SamplingOptions(), 5, 1, "ignore", "--unknown must be one of error, map, skip"),
    ],
)
def test_each_bad_value_is_one_clear_config_error(options, length, num_samples, unknown, fragment):
    with pytest.raises(ConfigError) as error:
        check_sample_request(options, WORDS, length, num_samples, unknown)
    assert fragment in str(error.value)
    assert "\n" not in str(error.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as error:
        check_sample_request(SamplingOptions(temperature=0, top_k=0, top_p=2.0), WORDS, 0, 0, "x")
    message = str(error.value)
    for option in ("--temperature", "--top-k", "--top-p", "--length", "--num-samples", "--unknown"):
        assert option in message


def test_word_only_options_are_refused_for_character_models():
    with pytest.raises(ConfigError, match="--no-unk applies to word models"):
        check_sample_request(SamplingOptions(no_unk=True), CHARS, 5, 1)
    with pytest.raises(ConfigError, match="--unknown map needs a word model"):
        check_sample_request(SamplingOptions(), CHARS, 5, 1, "map")


def test_greedy_with_default_options_is_fine():
    check_sample_request(SamplingOptions(greedy=True, no_unk=True), WORDS, 5, 1)


# ----- prompts ------------------------------------------------------------------------------------


def test_unknown_prompt_words_are_named_with_the_ways_around():
    with pytest.raises(ConfigError) as error:
        encode_text(WORDS, "a zebra b yak zebra")
    assert str(error.value) == (
        "the prompt has words outside the model's vocabulary: 'zebra', 'yak'; rephrase it with words from "
        "the training text, or --unknown skip drops them, --unknown map reads them as <unk>"
    )


def test_unknown_prompt_words_map_to_unk_or_are_skipped():
    assert encode_text(WORDS, "a zebra b", "map") == [2, WORDS.unk_id, 3]
    assert encode_text(WORDS, "a zebra b", "skip") == [2, 3]


def test_prompt_line_breaks_are_eos():
    assert encode_text(WORDS, "a b\nc") == [2, 3, WORDS.eos_id, 4]


def test_unknown_prompt_characters_are_named_and_can_be_skipped():
    with pytest.raises(ConfigError) as error:
        encode_text(CHARS, "abZ!")
    message = str(error.value)
    assert "characters outside the model's vocabulary: 'Z', '!'" in message
    assert "--unknown skip" in message and "--unknown map" not in message
    assert encode_text(CHARS, "abZ!", "skip") == [CHARS.index["a"], CHARS.index["b"]]


def test_draw_never_returns_a_token_of_probability_zero():
    probs = torch.tensor([[0.0, 0.25, 0.0, 0.75, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    generator = torch.Generator().manual_seed(0)
    tokens = torch.stack([draw(probs, generator) for _ in range(4000)])  # [4000, 3]
    assert set(tokens[:, 0].tolist()) == {1, 3}
    assert float((tokens[:, 0] == 3).double().mean()) == pytest.approx(0.75, abs=0.03)
    assert set(tokens[:, 1].tolist()) == {0} and set(tokens[:, 2].tolist()) == {4}


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_short_context_read_by_steps_equals_one_window(cell):
    """Up to STEPPED_CONTEXT tokens are read by the generation step, longer contexts as one window: both
    give the logits and state of the window, for the same context."""
    from lmtrain.generation.sampling import STEPPED_CONTEXT, read_context

    torch.manual_seed(0)
    config = ModelConfig(cell=cell, embedding_size=6, hidden_size=8, num_layers=2, dropout=0.0)
    model = RNNLanguageModel(9, config).eval()
    context = torch.randint(0, 9, (STEPPED_CONTEXT,)).tolist()
    with torch.inference_mode():
        logits, state = read_context(model, model.inference_step(), context, torch.device("cpu"))
        window_logits, window_state = model(torch.tensor(context).view(-1, 1), None)
    torch.testing.assert_close(logits, window_logits[-1], rtol=1e-5, atol=1e-5)
    for layer, window_layer in zip(state, window_state, strict=True):
        for tensor, window_tensor in zip(layer, window_layer, strict=True):
            torch.testing.assert_close(tensor, window_tensor, rtol=1e-5, atol=1e-5)


def test_a_character_model_whose_text_had_no_line_break_generates_without_a_prompt():
    """Nothing to condition on: the first token is drawn from the initial state alone, which must be made
    even though no token was read (the step is handed no state)."""
    tokenizer = CharTokenizer.build("abcabcab")  # no line break: no boundary token
    model = random_model(tokenizer.vocab_size)
    (sample,) = generate(model, tokenizer, 12, seed=3)
    assert len(sample) == 12 and set(sample) <= set(range(tokenizer.vocab_size))
    assert len(generate(model.train(), tokenizer, 12, seed=3)[0]) == 12  # the training-mode path too
