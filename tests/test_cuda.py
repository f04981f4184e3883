"""The same code on a CUDA GPU: every layer against its CPU result, training with fp32 and bf16
autocast for every cell, and the checkpoints and commands of a GPU run.

CI has no GPU, so these tests skip there with that reason; `scripts/cuda_check.sh` runs them on a
machine that has one.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch.testing import assert_close

from lmtrain.checkpoint import load_checkpoint, restore_model
from lmtrain.config import ModelConfig, config_from_dict
from lmtrain.model.cells import build_layer
from lmtrain.training.trainer import train

from helpers import LAYER_KINDS, invoke, tiny_config_dict

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

T, B, IN, H = 7, 3, 5, 6


def _gradients(layer, x, state):
    """Outputs, final state, and the gradients of every parameter and of x, for a fixed loss."""
    x = x.clone().requires_grad_(True)
    outputs, final = layer(x, state)
    weights = torch.linspace(-1.0, 1.0, outputs.numel(), dtype=outputs.dtype, device=outputs.device)
    loss = (outputs.flatten() * weights).sum() + sum(tensor.square().sum() for tensor in final)
    loss.backward()
    grads = {name: parameter.grad for name, parameter in layer.named_parameters()}
    return outputs.detach(), [tensor.detach() for tensor in final], grads, x.grad


@pytest.mark.parametrize("kind", sorted(LAYER_KINDS))
def test_every_layer_on_cuda_equals_its_cpu_result_in_float64(kind):
    config = ModelConfig(**LAYER_KINDS[kind], hidden_size=H)
    torch.manual_seed(0)
    on_cpu = build_layer(config, IN).double()
    on_gpu = build_layer(config, IN).double().cuda()
    on_gpu.load_state_dict(on_cpu.state_dict())
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, IN, dtype=torch.float64, generator=generator)
    state = tuple(
        torch.randn(B, H, dtype=torch.float64, generator=generator) for _ in range(on_cpu.num_states)
    )

    expected = _gradients(on_cpu, x, state)
    actual = _gradients(on_gpu, x.cuda(), tuple(tensor.cuda() for tensor in state))
    assert_close(actual[0].cpu(), expected[0])
    for got, want in zip(actual[1], expected[1], strict=True):
        assert_close(got.cpu(), want)
    assert actual[2].keys() == expected[2].keys()
    for name in expected[2]:
        if expected[2][name] is not None:
            assert_close(actual[2][name].cpu(), expected[2][name], msg=name)
    assert_close(actual[3].cpu(), expected[3])


@pytest.mark.parametrize(
    "cell, options",
    [("rnn", {}), ("rnn", {"nonlinearity": "relu"}), ("lstm", {}), ("gru", {"gru_variant": "cudnn"})],
)
def test_impl_native_on_cuda_equals_the_custom_layer_on_the_cpu_in_float64(cell, options):
    torch.manual_seed(0)
    fields = {"cell": cell, "hidden_size": H, **options}
    on_cpu = build_layer(ModelConfig(**fields), IN).double()
    on_gpu = build_layer(ModelConfig(**fields, impl="native"), IN).double().cuda()
    on_gpu.load_state_dict(on_cpu.state_dict())
    x = torch.randn(T, B, IN, dtype=torch.float64)
    state = tuple(torch.randn(B, H, dtype=torch.float64) for _ in range(on_cpu.num_states))
    expected = _gradients(on_cpu, x, state)
    actual = _gradients(on_gpu, x.cuda(), tuple(tensor.cuda() for tensor in state))
    assert_close(actual[0].cpu(), expected[0])
    for got, want in zip(actual[1], expected[1], strict=True):
        assert_close(got.cpu(), want)
    for name in expected[2]:
        assert_close(actual[2][name].cpu(), expected[2][name], msg=name)
    assert_close(actual[3].cpu(), expected[3])


@pytest.mark.parametrize("hidden", [64, 256])
def test_the_lstm_backward_through_time_in_float32_agrees_with_the_cpu(hidden):
    torch.manual_seed(0)
    config = ModelConfig(cell="lstm", hidden_size=hidden)
    on_cpu = build_layer(config, 32)
    on_gpu = build_layer(config, 32).cuda()
    on_gpu.load_state_dict(on_cpu.state_dict())
    x = torch.randn(20, 8, 32)
    expected = _gradients(on_cpu, x, None)
    actual = _gradients(on_gpu, x.cuda(), None)
    assert_close(actual[0].cpu(), expected[0], rtol=1e-4, atol=1e-5)
    for name in expected[2]:
        assert_close(actual[2][name].cpu(), expected[2][name], rtol=1e-3, atol=1e-4, msg=name)


CELL_OPTIONS = {
    "rnn": {"cell": "rnn"},
    "gru": {"cell": "gru"},
    "gru-cudnn": {"cell": "gru", "gru_variant": "cudnn"},
    "lstm": {"cell": "lstm"},
    "esn": {"cell": "esn"},
    "bidirectional-gru": {"cell": "gru", "bidirectional": True},
    "bidirectional-lstm": {"cell": "lstm", "bidirectional": True},
    "rnn-native": {"cell": "rnn", "impl": "native"},
    "gru-cudnn-native": {"cell": "gru", "gru_variant": "cudnn", "impl": "native"},
    "lstm-native": {"cell": "lstm", "impl": "native"},
}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", sorted(CELL_OPTIONS))
def test_training_on_cuda_gives_finite_losses_and_a_checkpoint_that_loads_on_the_cpu(
    name, precision, tiny_corpus, tmp_path
):
    config = tiny_config_dict(
        tiny_corpus,
        tmp_path / "run",
        model=CELL_OPTIONS[name],
        train={"device": "cuda", "precision": precision, "max_steps": 6, "eval_interval": 3},
    )
    result = train(config_from_dict(config), show_progress=False)
    assert result.steps == 6 and result.best_valid_loss == result.best_valid_loss
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    model, _, _ = restore_model(checkpoint)
    assert {parameter.device.type for parameter in model.parameters()} == {"cpu"}


def test_a_gpu_run_samples_scores_and_evaluates_the_same_on_cuda_and_on_the_cpu(tiny_corpus, tmp_path):
    config = tiny_config_dict(tiny_corpus, tmp_path / "run", train={"device": "cuda", "max_steps": 10})
    train(config_from_dict(config), show_progress=False)
    best = tmp_path / "run" / "best.pt"
    evaluated = {}
    for device in ("cuda", "cpu"):
        result = invoke("eval", best, "--split", "valid", "--json", "--device", device)
        assert result.exit_code == 0, result.output
        evaluated[device] = json.loads(result.stdout)
        scored = invoke("score", best, "the dog runs", "--device", device)
        assert scored.exit_code == 0, scored.output
    assert evaluated["cuda"]["loss"] == pytest.approx(evaluated["cpu"]["loss"], rel=1e-4)
    greedy = ("sample", best, "--greedy", "--length", "12", "--prime", "the")
    on_gpu, on_cpu = invoke(*greedy, "--device", "cuda"), invoke(*greedy, "--device", "cpu")
    assert on_gpu.exit_code == 0 and on_cpu.exit_code == 0, on_gpu.output + on_cpu.output
    assert on_gpu.output == on_cpu.output
