"""The generation loop on buffers made once (`fast.token_loop`) against the per-token path it replaces:
the same tokens for every cell, option and context, and the C sampler against `sampling.next_tokens`."""

from __future__ import annotations

import gc

import pytest
import torch

from lmtrain.config import ModelConfig
from lmtrain.data.tokenizer import EOS, UNK, CharTokenizer, WordTokenizer
from lmtrain.fast.kernels.generate import FEW_STREAMS, generation_kernels
from lmtrain.fast.token_loop import TokenLoop
from lmtrain.generation.sampling import STEPPED_CONTEXT, SamplingOptions, generate, next_tokens
from lmtrain.model import RNNLanguageModel

from fast_helpers import GENERATION_CELLS, needs_kernels

pytestmark = [pytest.mark.fast, needs_kernels]

CHARS = CharTokenizer.build("the quick brown fox jumps over the lazy dog\n")
WORDS = WordTokenizer([UNK, EOS, "a", "b", "c", "d", "e", "f"])

MODELS = {
    **GENERATION_CELLS,
    "esn": {"cell": "esn"},
    "lstm-residual": {"cell": "lstm", "residual": True},
}
"""Models by test id: `ModelConfig` fields (every cell with a C generation step, and two more)."""

OPTIONS = {
    "plain": SamplingOptions(),
    "temperature": SamplingOptions(temperature=0.6),
    "greedy": SamplingOptions(greedy=True),
    "top-k": SamplingOptions(top_k=4),
    "top-p": SamplingOptions(top_p=0.8, temperature=1.3),
}


def sharp_model(vocab_size: int, embedding_size: int, seed: int = 0, **arguments) -> RNNLanguageModel:
    torch.manual_seed(seed)
    config = ModelConfig(
        embedding_size=embedding_size, hidden_size=40, num_layers=2, dropout=0.0, **arguments
    )
    model = RNNLanguageModel(vocab_size, config)
    with torch.no_grad():
        model.decoder.weight.mul_(8)  # distributions sharper than the initial weights give
    return model.eval()


def without_loop(monkeypatch: pytest.MonkeyPatch, run):
    """`run()` on the per-token path: `TokenLoop.for_model` declines."""
    with monkeypatch.context() as patch:
        patch.setattr(TokenLoop, "for_model", classmethod(lambda cls, model, streams: None))
        return run()


@pytest.mark.parametrize("model_id", list(MODELS))
@pytest.mark.parametrize("embedding_size", [16, 40])  # folded into the first layer (V = 30 <= 40) or not
@pytest.mark.parametrize("option", list(OPTIONS))
def test_the_loop_generates_the_tokens_of_the_per_token_path(model_id, embedding_size, option, monkeypatch):
    model = sharp_model(CHARS.vocab_size, embedding_size, **MODELS[model_id])
    assert TokenLoop.for_model(model, 3) is not None

    def run():
        return generate(model, CHARS, 40, OPTIONS[option], prompt_ids=[3, 1], num_samples=3, seed=5)

    assert run() == without_loop(monkeypatch, run)


@pytest.mark.parametrize("prompt_length", [0, STEPPED_CONTEXT + 3])
def test_a_long_context_or_none_starts_the_loop_as_the_per_token_path(prompt_length, monkeypatch):
    """A context longer than STEPPED_CONTEXT is read as one window; no context at all (a character model
    whose text had no line break, and no prompt) starts from the initial state with a uniform draw."""
    tokenizer = CharTokenizer.build("abcdefgh") if prompt_length == 0 else CHARS
    model = sharp_model(tokenizer.vocab_size, 16)
    prompt = [i % tokenizer.vocab_size for i in range(prompt_length)]

    def run():
        return generate(model, tokenizer, 30, prompt_ids=prompt, num_samples=2, seed=2)

    samples = run()
    assert samples == without_loop(monkeypatch, run)
    assert all(len(sample) == 30 for sample in samples)


def test_word_models_stop_at_eos_and_never_emit_unk_in_the_loop(monkeypatch):
    model = sharp_model(WORDS.vocab_size, 6, seed=3)
    with torch.no_grad():
        model.decoder.bias[WORDS.unk_id] = 5.0  # <unk> the most probable token

    def run():
        options = SamplingOptions(no_unk=True)
        return generate(model, WORDS, 50, options, num_samples=6, seed=1, stop_at_eos=True)

    samples = run()
    assert samples == without_loop(monkeypatch, run)
    assert all(WORDS.unk_id not in sample for sample in samples)
    assert any(sample and sample[-1] == WORDS.eos_id and len(sample) < 50 for sample in samples)


def test_the_loop_declines_what_it_does_not_serve():
    model = sharp_model(CHARS.vocab_size, 16)
    assert TokenLoop.for_model(model, FEW_STREAMS) is not None
    assert TokenLoop.for_model(model, FEW_STREAMS + 1) is None
    assert TokenLoop.for_model(model.train(), 1) is None  # dropout would be skipped
    assert TokenLoop.for_model(model.eval().double(), 1) is None


def test_the_c_sampler_picks_the_token_of_next_tokens():
    """Random logits with -inf entries, every option the sampler serves: the same token as torch's
    `next_tokens` for the same generator state (they differ only where a uniform number falls within
    float rounding of a boundary, which these 1,200 draws do not meet)."""
    kernels, generator = generation_kernels(), torch.Generator().manual_seed(0)
    for trial in range(400):
        vocab = int(torch.randint(2, 300, (1,), generator=generator))
        logits = torch.randn(3, vocab, generator=generator) * float(1 + 4 * (trial % 3))
        logits[:, torch.randint(0, vocab, (vocab // 4,), generator=generator)] = -float("inf")
        logits[:, 0] = 0.0  # one finite logit at least
        options = SamplingOptions(temperature=(1.0, 0.5, 2.0)[trial % 3], greedy=trial % 7 == 0)
        banned = 0 if trial % 5 == 0 else None
        tokens, uniforms = torch.empty(3, dtype=torch.int64), torch.empty(3, 1, dtype=torch.float64)
        sample = kernels.sampler(logits, tokens, uniforms, options.temperature, options.greedy, banned)
        seed = int(torch.randint(0, 2**31, (1,), generator=generator))
        expected = next_tokens(logits, options, banned, torch.Generator().manual_seed(seed))
        if not options.greedy:
            uniforms.uniform_(generator=torch.Generator().manual_seed(seed))
        sample()
        assert torch.equal(tokens, expected), trial
        assert banned is None or not (tokens == banned).any()


def test_bound_calls_keep_what_they_read_alive():
    """A bound call holds its packed weights: the step object may go, the call still computes."""
    kernels = generation_kernels()
    weight, bias, x = torch.randn(70, 9), torch.randn(70), torch.randn(2, 9)
    out = torch.empty(2, 70)
    call = kernels.linear_layer(weight, bias).bind(x, out)
    gc.collect()
    garbage = [torch.randn(70, 9) for _ in range(50)]  # reuses freed memory, if any was freed
    call()
    del garbage
    torch.testing.assert_close(out, torch.nn.functional.linear(x, weight, bias), rtol=1e-5, atol=1e-5)


def test_generate_runs_one_call_per_layer_per_token():
    """The loop's token: one bound call per layer and one for the decoder (the embedding folded)."""
    model = sharp_model(CHARS.vocab_size, 40)
    loop = TokenLoop.for_model(model, 2)
    assert [len(calls) for calls in loop._calls] == [3, 3]
