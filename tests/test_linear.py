"""The decoder's `Linear` (`lmtrain.fast.linear`): `nn.Linear`'s results, parameters and state dict, with its
products on oneDNN where the rules say so and on `nn.Linear`'s own path everywhere else."""

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from lmtrain.config import ModelConfig
from lmtrain.fast import onednn_linear
from lmtrain.fast.linear import Linear
from lmtrain.fast.onednn_linear import onednn_available
from lmtrain.model import RNNLanguageModel

pytestmark = pytest.mark.fast  # tests of lmtrain.fast itself: skipped with LMTRAIN_FAST=off

needs_onednn = pytest.mark.skipif(not onednn_available(), reason="this torch has no oneDNN linear operators")


@pytest.fixture
def onednn_everywhere(monkeypatch):
    """The rules' thresholds at zero, on a CPU of the kind measured: every product goes to oneDNN."""
    monkeypatch.setattr(onednn_linear, "onednn_outpaces_mkl", lambda: True)
    monkeypatch.setattr(onednn_linear, "MIN_MULTIPLY_ADDS", 0)
    monkeypatch.setattr(onednn_linear, "WEIGHT_GRADIENTS_MIN_WIDTH", 0)
    monkeypatch.setattr("lmtrain.fast.linear.MIN_WIDTH", 0)


def _pair(in_features: int, out_features: int, bias: bool = True) -> tuple[nn.Linear, Linear]:
    torch.manual_seed(in_features * out_features)
    reference = nn.Linear(in_features, out_features, bias=bias)
    ours = Linear(in_features, out_features, bias=bias)
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def _forward_and_gradients(layer: nn.Module, x: torch.Tensor, upstream: torch.Tensor):
    x = x.detach().requires_grad_()
    layer.zero_grad(set_to_none=True)
    y = layer(x)
    y.backward(upstream)
    return [y, x.grad] + [p.grad for p in layer.parameters()]


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(7, 5, 24), (30, 40)])
def test_linear_on_onednn_matches_nn_linear(onednn_everywhere, shape, bias):
    reference, ours = _pair(shape[-1], 52, bias)
    x = torch.randn(shape)
    upstream = torch.randn(*shape[:-1], 52)
    with torch.no_grad():
        assert ours(x).grad_fn is None
    assert type(ours(x).grad_fn).__name__ == "ViewBackward0"  # the oneDNN function's output, viewed
    got, expected = (_forward_and_gradients(layer, x, upstream) for layer in (ours, reference))
    assert len(got) == len(expected) == (4 if bias else 3)
    for a, b in zip(got, expected, strict=True):
        assert a.shape == b.shape
        assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_linear_is_nn_linear_where_onednn_does_not_pay(monkeypatch):
    monkeypatch.setattr(onednn_linear, "onednn_outpaces_mkl", lambda: False)  # an AVX2 or Intel CPU
    reference, ours = _pair(24, 52)
    x, upstream = torch.randn(9, 24), torch.randn(9, 52)
    got, expected = (_forward_and_gradients(layer, x, upstream) for layer in (ours, reference))
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)


@needs_onednn
def test_narrow_float64_and_autocast_stay_on_nn_linear(onednn_everywhere, monkeypatch):
    _, ours = _pair(24, 52)
    assert ours._onednn_pays(torch.randn(4, 24))
    assert not ours.double()._onednn_pays(torch.randn(4, 24, dtype=torch.float64))
    ours.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not ours._onednn_pays(torch.randn(4, 24))
        assert ours(torch.randn(4, 24)).dtype == torch.bfloat16
    monkeypatch.setattr("lmtrain.fast.linear.MIN_WIDTH", 256)  # the real rule: a character model's V = 65
    assert not Linear(512, 65)._onednn_pays(torch.randn(4096, 512))


def test_the_rules_send_the_word_models_decoder_to_onednn(monkeypatch):
    monkeypatch.setattr(onednn_linear, "onednn_outpaces_mkl", lambda: True)
    decoder = Linear(650, 10_000)
    assert decoder._onednn_pays(torch.empty(35, 20, 650)) is onednn_available()
    assert not decoder._onednn_pays(torch.empty(1, 1, 650))  # a generation step: too few multiply-adds


@needs_onednn
def test_a_tied_decoder_trains_like_the_plain_model(onednn_everywhere, monkeypatch):
    """The language model with its weight tied between embedding and decoder: the same loss and gradients
    as with `nn.Linear`'s products (the rules on and off)."""

    def loss_and_gradients(on_onednn: bool):
        monkeypatch.setattr(onednn_linear, "onednn_outpaces_mkl", lambda: on_onednn)
        torch.manual_seed(0)
        config = ModelConfig(
            cell="gru", embedding_size=16, hidden_size=16, num_layers=1, dropout=0.0, tie_weights=True
        )
        model = RNNLanguageModel(40, config)
        tokens = torch.randint(40, (6, 3), generator=torch.Generator().manual_seed(1))
        loss, _ = model.language_model_loss(tokens[:-1], tokens[1:])
        loss.backward()
        assert model.decoder.weight is model.embedding.weight
        return [loss] + [p.grad for p in model.parameters()]

    for a, b in zip(loss_and_gradients(True), loss_and_gradients(False), strict=True):
        assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_checkpoints_keep_nn_linears_keys():
    reference, ours = _pair(8, 12)
    assert list(ours.state_dict()) == list(reference.state_dict()) == ["weight", "bias"]
    assert isinstance(ours, nn.Linear)
