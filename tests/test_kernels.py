"""The C kernels (`lmtrain.fast.kernels`): the fused LSTM window must compute what the torch window and
`nn.LSTM` compute, the generation kernels what the checked step and `sampling.draw` compute, and the
build must fall back, warn or fail as `LMTRAIN_KERNELS` says."""

import os
import stat
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from lmtrain.config import ModelConfig
from lmtrain.errors import LmtrainError
from lmtrain.fast import generation as fast_generation
from lmtrain.fast import gru_window as gru_bptt
from lmtrain.fast import lstm_window as lstm_bptt
from lmtrain.fast.kernels import compiler
from lmtrain.fast.kernels.generate import FEW_STREAMS, GenerationKernels, generation_kernels
from lmtrain.fast.kernels.gru import gru_step_kernels
from lmtrain.fast.kernels.lstm import LSTMStepKernels, lstm_step_kernels
from lmtrain.fast.panels import generation_linear
from lmtrain.generation import sampling
from lmtrain.model import RNNLanguageModel
from lmtrain.model.cells import build_layer

from fast_helpers import GENERATION_CELLS, needs_kernels

pytestmark = pytest.mark.fast  # tests of lmtrain.fast itself: skipped with LMTRAIN_FAST=off


@pytest.fixture
def fresh_kernels(monkeypatch, tmp_path):
    """An empty kernel cache and no kernels loaded in this process yet (restored afterwards)."""
    monkeypatch.setenv("LMTRAIN_CACHE", str(tmp_path))
    loaders = (
        compiler.kernel_library,
        lstm_step_kernels,
        gru_step_kernels,
        generation_kernels,
    )
    for loader in loaders:
        loader.cache_clear()
    yield tmp_path / "kernels"
    for loader in loaders:
        loader.cache_clear()


def window_results(layer, x, state, fused: bool, monkeypatch) -> list[torch.Tensor]:
    """Outputs and every gradient of one window, on the fused or the torch path (asserting which ran)."""
    calls = []
    if fused:
        kernels = lstm_step_kernels()
        assert kernels is not None
        monkeypatch.setattr(lstm_bptt, "lstm_step_kernels", lambda: calls.append(1) or kernels)
    else:
        monkeypatch.setattr(lstm_bptt, "lstm_step_kernels", lambda: None)
    for tensor in (x, *state, *layer.parameters()):
        tensor.grad = None
    y, (a, c) = layer._run_fused(x, state)
    generator = torch.Generator().manual_seed(5)
    loss = (y * torch.randn(y.shape, generator=generator)).sum() + (c * c).sum()
    loss.backward()
    assert len(calls) == int(fused)
    return [y, c, x.grad, *(s.grad for s in state), *(p.grad for p in layer.parameters())]


@needs_kernels
@pytest.mark.parametrize("hidden, batch, steps", [(8, 3, 5), (40, 2, 1), (96, 7, 4)])
def test_fused_window_equals_the_torch_window(hidden, batch, steps, monkeypatch):
    torch.manual_seed(hidden)
    layer = build_layer(ModelConfig(cell="lstm", hidden_size=hidden), 6)
    x = torch.randn(steps, batch, 6, requires_grad=True)
    state = tuple(torch.randn(batch, hidden, requires_grad=True) for _ in range(2))
    fused = window_results(layer, x, state, True, monkeypatch)
    plain = window_results(layer, x, state, False, monkeypatch)
    for got, expected in zip(fused, plain, strict=True):
        assert_close(got, expected, rtol=1e-5, atol=2e-6)


@needs_kernels
@pytest.mark.parametrize("hidden, batch, steps", [(8, 3, 5), (40, 2, 1), (96, 7, 4)])
def test_fused_gru_window_equals_the_torch_window(hidden, batch, steps, monkeypatch):
    """The notes' GRU: outputs and every gradient of its fused window (two C calls per step each way)
    against its torch window."""
    torch.manual_seed(hidden)
    layer = build_layer(ModelConfig(cell="gru", hidden_size=hidden), 6)
    x = torch.randn(steps, batch, 6, requires_grad=True)
    (c0,) = state = (torch.randn(batch, hidden, requires_grad=True),)
    generator = torch.Generator().manual_seed(5)
    weights = torch.randn(steps, batch, hidden, generator=generator)
    results = []
    for kernels in (gru_step_kernels(), None):
        assert kernels is not None or results
        monkeypatch.setattr(gru_bptt, "gru_step_kernels", lambda kernels=kernels: kernels)
        for tensor in (x, c0, *layer.parameters()):
            tensor.grad = None
        y, _ = layer._run_fused(x, state)
        ((y * weights).sum() + (y[-1] ** 2).sum()).backward()
        results.append([y, x.grad, c0.grad, *(p.grad for p in layer.parameters())])
    for got, expected in zip(*results, strict=True):
        assert_close(got, expected, rtol=1e-5, atol=2e-6)


@needs_kernels
def test_fused_window_equals_nn_lstm_in_float32():
    torch.manual_seed(0)
    layer = build_layer(ModelConfig(cell="lstm", hidden_size=16), 5)
    reference = layer.to_native()
    x = torch.randn(7, 3, 5, requires_grad=True)
    a0, c0 = torch.randn(3, 16), torch.randn(3, 16)
    y, (a, c) = layer(x, (a0, c0))
    expected_y, (expected_a, expected_c) = reference(x, (a0[None], c0[None]))
    assert_close(y, expected_y, rtol=1e-5, atol=1e-6)
    assert_close(c, expected_c[0], rtol=1e-5, atol=1e-6)
    (grad_x,) = torch.autograd.grad(y.sum() + c.sum(), x)
    (expected_grad_x,) = torch.autograd.grad(expected_y.sum() + expected_c.sum(), x)
    assert_close(grad_x, expected_grad_x, rtol=1e-5, atol=1e-6)


@needs_kernels
def test_step_kernels_saturate_cleanly_and_keep_nan():
    """Pre-activations far outside the sigmoid's range give exact 0/1 gates and finite states; NaN stays NaN
    (the trainer's non-finite-loss check depends on it)."""
    kernels = lstm_step_kernels()
    hidden = 9
    pre = torch.tensor([[-1e4, -100.0, -30.0, -1.0, 0.0, 1.0, 30.0, 100.0, 1e4] * 4])  # [1, 4H]
    gates, c, a = torch.zeros(1, 4 * hidden), torch.empty(1, hidden), torch.empty(1, hidden)
    c_prev = torch.ones(1, hidden)
    kernels.forward(pre, gates, c_prev, c, a)  # z = pre + 0
    sigmoid, tanh = torch.sigmoid(pre[0, :hidden]), torch.tanh(pre[0, :hidden])
    assert_close(gates, torch.cat([sigmoid, sigmoid, tanh, sigmoid])[None], rtol=1e-6, atol=1e-7)
    expected_c = sigmoid * c_prev[0] + sigmoid * tanh
    assert_close(c[0], expected_c, rtol=1e-6, atol=1e-7)
    assert_close(a[0], sigmoid * torch.tanh(expected_c), rtol=1e-6, atol=1e-7)
    pre[0, 0] = float("nan")
    kernels.forward(pre, gates.zero_(), c_prev, c, a)
    assert torch.isnan(c[0, 0]) and torch.isnan(a[0, 0]) and torch.isfinite(a[0, 1:]).all()


@needs_kernels
def test_kernels_reject_tensors_they_cannot_read():
    kernels = lstm_step_kernels()
    gates = torch.empty(2, 16)
    with pytest.raises(ValueError, match="contiguous"):
        state = torch.empty(2, 4)
        kernels.forward(torch.empty(16, 2).t(), gates, state, state.clone(), state.clone())


@needs_kernels
def test_build_is_cached_per_source_compiler_and_cpu(fresh_kernels, monkeypatch):
    assert isinstance(lstm_step_kernels(), LSTMStepKernels)
    (library,) = fresh_kernels.glob("*.so")
    built_at = library.stat().st_mtime_ns
    lstm_step_kernels.cache_clear()
    assert lstm_step_kernels() is not None
    assert [p.stat().st_mtime_ns for p in fresh_kernels.glob("*.so")] == [built_at]  # reused, not rebuilt
    monkeypatch.setattr(compiler, "cpu_signature", lambda: "flags: another cpu")
    sources, cc = compiler.kernel_sources(), compiler.find_compiler()
    assert compiler.library_path(sources, cc, compiler.FLAG_SETS[0], fresh_kernels) != library


@needs_kernels
def test_a_damaged_cached_library_is_rebuilt(tmp_path):
    """A cache entry that will not load (a truncated file, say) is built again, not kept failing. In a
    fresh process: this one already has the library loaded under that name."""
    code = "from lmtrain.fast.kernels.lstm import lstm_step_kernels; assert lstm_step_kernels() is not None"
    env = {**os.environ, "LMTRAIN_CACHE": str(tmp_path), "LMTRAIN_KERNELS": "fused"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    (library,) = (tmp_path / "kernels").glob("*.so")
    library.write_bytes(b"not a shared library")
    subprocess.run([sys.executable, "-W", "error", "-c", code], env=env, check=True, timeout=120)
    assert library.read_bytes() != b"not a shared library"


def test_kernels_off_means_no_build(fresh_kernels, monkeypatch):
    monkeypatch.setenv("LMTRAIN_KERNELS", "torch")
    assert lstm_step_kernels() is None
    assert not fresh_kernels.exists()


def test_no_compiler_warns_once_and_falls_back_to_torch(fresh_kernels, monkeypatch):
    monkeypatch.setenv("CC", "no-such-compiler-here")
    with pytest.warns(RuntimeWarning, match="no C compiler found.*LMTRAIN_KERNELS=torch"):
        assert lstm_step_kernels() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lstm_step_kernels() is None  # cached: one warning per process
    layer = build_layer(ModelConfig(cell="lstm", hidden_size=4), 3)
    y, _ = layer(torch.randn(2, 1, 3))  # the torch path still trains
    assert y.shape == (2, 1, 4)


def test_fused_mode_makes_a_missing_compiler_an_error(fresh_kernels, monkeypatch):
    monkeypatch.setenv("CC", "no-such-compiler-here")
    monkeypatch.setenv("LMTRAIN_KERNELS", "fused")
    with pytest.raises(compiler.KernelUnavailable, match="LMTRAIN_KERNELS=fused.*no C compiler"):
        lstm_step_kernels()


def test_an_unknown_mode_is_an_error_naming_the_choices(monkeypatch):
    monkeypatch.setenv("LMTRAIN_KERNELS", "fast")
    with pytest.raises(LmtrainError, match="'fast' is not one of auto, torch, fused"):
        compiler.kernel_mode()


@needs_kernels
@pytest.mark.skipif(len(compiler.FLAG_SETS) < 2, reason="only the portable build is tried on this platform")
def test_a_compiler_without_native_flags_gets_the_portable_build(fresh_kernels, tmp_path, monkeypatch):
    """A compiler that rejects -march=native or -fopenmp (Apple clang) gets the second, portable flag set."""
    real = compiler.find_compiler()
    wrapper = tmp_path / "picky-cc"
    wrapper.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do [ "$a" = -march=native ] && { echo "unknown flag" >&2; exit 1; }; done\n'
        f'exec {real} "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("CC", str(wrapper))
    assert lstm_step_kernels() is not None
    (library,) = fresh_kernels.glob("*.so")
    sources = compiler.kernel_sources()
    assert library == compiler.library_path(sources, str(wrapper), compiler.PORTABLE_FLAGS, fresh_kernels)


@needs_kernels
def test_concurrent_first_builds_all_load(tmp_path):
    """torchrun starts every rank at once; each builds into its own file and renames it into place."""
    code = "from lmtrain.fast.kernels.lstm import lstm_step_kernels; assert lstm_step_kernels() is not None"
    env = {**os.environ, "LMTRAIN_CACHE": str(tmp_path)}
    runs = [subprocess.Popen([sys.executable, "-c", code], env=env) for _ in range(3)]
    assert [run.wait(timeout=120) for run in runs] == [0, 0, 0]
    assert len(list((tmp_path / "kernels").glob("*.so"))) == 1
    assert not list((tmp_path / "kernels").glob("*.partial"))


def test_cli_rejects_an_unknown_mode_before_any_work(monkeypatch):
    from typer.testing import CliRunner

    from lmtrain.cli import app

    monkeypatch.setenv("LMTRAIN_KERNELS", "fast")
    result = CliRunner().invoke(app, ["data", "list"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: LMTRAIN_KERNELS='fast' is not one of auto, torch, fused; unset it or pick one"
    ]


# ----- generation kernels ---------------------------------------------------------------------------


@needs_kernels
@pytest.mark.parametrize("cell", list(GENERATION_CELLS))
@pytest.mark.parametrize("hidden", [13, 70])
@pytest.mark.parametrize("folded", [True, False])
@pytest.mark.parametrize("batch", [1, 3, FEW_STREAMS, FEW_STREAMS + 1])
def test_generation_step_equals_the_checked_step(cell, hidden, folded, batch):
    """The C step (up to FEW_STREAMS streams) and the torch step beyond it compute the layer's checked
    `step`, whatever the cell. H = 13 leaves most of a block as padding; H = 70 fills whole blocks of 16,
    32 and 64 units (the LSTM's, the GRU gates' and the 64-row ones) and part of the next."""
    torch.manual_seed(batch)
    layer = build_layer(ModelConfig(hidden_size=hidden, **GENERATION_CELLS[cell]), 11).eval()
    embedding = torch.randn(6, 11) if folded else None
    inputs = torch.randint(0, 6, (batch,)) if folded else torch.randn(batch, 11)
    state = tuple(torch.randn(batch, hidden) for _ in range(layer.num_states))
    with torch.inference_mode():
        y, new_state = layer.inference_step(embedding)(inputs, state)
        expected_y, expected_state = layer.step(embedding[inputs] if folded else inputs, state)
    assert_close(y, expected_y, rtol=1e-5, atol=1e-6)
    for got, expected in zip(new_state, expected_state, strict=True):
        assert_close(got, expected, rtol=1e-5, atol=1e-6)


@needs_kernels
@pytest.mark.parametrize("cell", ["gru", "gru-cudnn", "rnn-tanh", "rnn-relu"])
def test_generation_step_of_bfloat16_weights_gives_the_same_bits(cell, monkeypatch):
    """The GRU and RNN steps, like the LSTM's (below), pack weights that hold bfloat16 numbers as bfloat16
    and give the same bits as from the same numbers packed as fp32."""
    torch.manual_seed(0)
    layer = build_layer(ModelConfig(hidden_size=37, **GENERATION_CELLS[cell]), 21).eval()
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.copy_(parameter.bfloat16())
    inputs, state = torch.randn(3, 21), tuple(torch.randn(3, 37) for _ in range(layer.num_states))
    with torch.inference_mode():
        compact = layer.inference_step()(inputs, state)
        monkeypatch.setattr(GenerationKernels, "holds_bfloat16", lambda *weights: False)
        plain = layer.inference_step()(inputs, state)
    assert torch.equal(compact[0], plain[0])


@needs_kernels
def test_relu_generation_step_keeps_nan():
    layer = build_layer(ModelConfig(cell="rnn", nonlinearity="relu", hidden_size=5), 4).eval()
    with torch.inference_mode():
        a, _ = layer.inference_step()(torch.full((1, 4), float("nan")), (torch.zeros(1, 5),))
    assert torch.isnan(a).all()


@needs_kernels
@pytest.mark.parametrize("cell", ["gru", "rnn-tanh"])
def test_generation_step_refuses_tokens_outside_the_table(cell):
    layer = build_layer(ModelConfig(hidden_size=13, **GENERATION_CELLS[cell]), 11).eval()
    step = layer.inference_step(torch.randn(6, 11))
    with torch.inference_mode(), pytest.raises(IndexError, match=r"outside the vocabulary \[0, 6\)"):
        step(torch.tensor([2, 6]), (torch.zeros(2, 13),))


@needs_kernels
@pytest.mark.parametrize("batch", [1, 5, FEW_STREAMS + 1])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("out_features", [23, 130])
def test_generation_linear_equals_f_linear(batch, with_bias, out_features):
    """Output features are packed in blocks of 64: 23 is one partial block, 130 two whole ones and two
    rows of a third."""
    generator = torch.Generator().manual_seed(2)
    weight, x = (
        torch.randn(out_features, 37, generator=generator),
        torch.randn(batch, 37, generator=generator),
    )
    bias = torch.randn(out_features, generator=generator) if with_bias else None
    assert_close(generation_linear(weight, bias)(x), F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)


def rounded_to_bfloat16(*shape: int, generator: torch.Generator) -> torch.Tensor:
    """Random fp32 numbers that bfloat16 holds exactly."""
    return torch.randn(*shape, generator=generator).bfloat16().float()


@needs_kernels
@pytest.mark.parametrize("folded", [True, False])
@pytest.mark.parametrize("batch", [1, 3])
def test_generation_step_packs_bfloat16_weights_with_the_same_result(folded, batch, monkeypatch):
    """Weights that bfloat16 holds exactly are packed as bfloat16, half the bytes, and the step gives the
    same bits as from the same weights packed as fp32; any other weights stay fp32. H = 37: two whole
    blocks of 16 units and part of a third; E = 21."""
    kernels, generator = generation_kernels(), torch.Generator().manual_seed(batch)
    hidden, input_size, vocab = 37, 21, 6
    weight_aa = rounded_to_bfloat16(4 * hidden, hidden, generator=generator)
    weight_ax = rounded_to_bfloat16(4 * hidden, input_size, generator=generator)
    bias = torch.randn(4 * hidden, generator=generator)
    table = torch.randn(vocab, 4 * hidden, generator=generator)
    weights = {"table": table} if folded else {"bias": bias, "weight_ax": weight_ax}
    inputs = torch.randint(0, vocab, (batch,)) if folded else torch.randn(batch, input_size)
    state = (torch.randn(batch, hidden), torch.randn(batch, hidden))

    compact = kernels.lstm_layer(weight_aa, **weights)
    monkeypatch.setattr(GenerationKernels, "holds_bfloat16", lambda *weights: False)
    plain = kernels.lstm_layer(weight_aa, **weights)
    monkeypatch.undo()
    assert compact.weights_bf16 and not plain.weights_bf16
    for got, expected in zip(compact(inputs, *state), plain(inputs, *state), strict=True):
        assert torch.equal(got, expected)
    unrounded = kernels.lstm_layer(weight_aa + 1e-4, **weights)
    assert not unrounded.weights_bf16


@needs_kernels
def test_generation_linear_packs_bfloat16_weights_with_the_same_result(monkeypatch):
    generator = torch.Generator().manual_seed(4)
    weight, bias = rounded_to_bfloat16(130, 37, generator=generator), torch.randn(130, generator=generator)
    x = torch.randn(3, 37, generator=generator)
    compact = generation_kernels().linear_layer(weight, bias)
    monkeypatch.setattr(GenerationKernels, "holds_bfloat16", lambda *weights: False)
    plain = generation_kernels().linear_layer(weight, bias)
    assert compact.weights_bf16 and not plain.weights_bf16
    assert torch.equal(compact(x), plain(x))
    assert_close(compact(x), F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)


@needs_kernels
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_model_inference_step_matches_model_step_on_both_paths(cell, monkeypatch):
    """Teacher-forced logits of a 2-layer character model (embedding folded) from the C generation step
    equal the checked `model.step`, and so do the torch generation step's."""
    torch.manual_seed(0)
    config = ModelConfig(cell=cell, embedding_size=9, hidden_size=10, num_layers=2, dropout=0.0)
    model = RNNLanguageModel(7, config).eval()
    tokens = torch.randint(0, 7, (12, 2))
    with torch.inference_mode():
        fused = model.inference_step()
        generation_state = checked_state = model.initial_state(2)
        for token in tokens:
            logits, generation_state = fused(token, generation_state)
            expected, checked_state = model.step(token, checked_state)
            assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(fast_generation, "generation_kernels", lambda: None)
    with torch.inference_mode():
        state = model.initial_state(2)
        logits, _ = model.inference_step()(tokens[0], state)
        assert_close(logits, model.step(tokens[0], state)[0], rtol=1e-5, atol=1e-5)


@needs_kernels
def test_draw_kernel_picks_torchs_token_bit_for_bit(monkeypatch):
    """`sampling.draw` through the C kernel and through torch: the same token for the same uniform number,
    with zero-probability tokens and skewed distributions; u = 1 takes the first most probable token."""
    kernels = generation_kernels()
    generator = torch.Generator().manual_seed(3)
    for trial in range(300):
        vocab = int(torch.randint(2, 200, (1,), generator=generator))
        logits = torch.randn(3, vocab, generator=generator) * float(1 + 9 * (trial % 4))
        logits[:, torch.randint(0, vocab, (vocab // 3,), generator=generator)] = -float("inf")
        probs = logits.softmax(dim=-1)
        seed = int(torch.randint(0, 2**31, (1,)))
        drawn = sampling.draw(probs, torch.Generator().manual_seed(seed))
        monkeypatch.setattr(fast_generation, "generation_kernels", lambda: None)
        expected = sampling.draw(probs, torch.Generator().manual_seed(seed))
        monkeypatch.undo()
        assert torch.equal(drawn, expected)
    probs = torch.tensor([[0.2, 0.4, 0.4, 0.0]])
    assert kernels.draw(probs, torch.ones(1, 1, dtype=torch.float64)).tolist() == [1]
