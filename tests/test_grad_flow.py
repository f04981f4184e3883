"""The gradient-flow monitor measures ‖∂L<T>/∂a<t>‖ exactly, costs nothing when off, and draws its plot."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from lmtrain.analysis.grad_flow import gradient_flow
from lmtrain.analysis.plots import gradient_flow_figure, save_figure
from lmtrain.config import ModelConfig
from lmtrain.model import RNNLanguageModel

from helpers import png_size


def reference_norms(model, inputs, targets, state, torch_layer, lstm: bool) -> torch.Tensor:
    """‖∂L<T>/∂a<t>‖ computed independently: the top layer replaced by PyTorch's own module, run one
    step at a time so that every a<t> is a tensor autograd can differentiate with respect to."""
    x = model.embedding(inputs)  # [T, B, E] (eval mode: no dropout)
    for layer, layer_state in zip(model.layers[:-1], state[:-1], strict=True):
        x, _ = layer(x, layer_state)
    top_state = tuple(s.unsqueeze(0) for s in state[-1])  # torch's [num_layers=1, B, H]
    hidden = []
    for x_t in x.split(1):
        _, top_state = torch_layer(x_t, top_state if lstm else top_state[0])
        top_state = top_state if lstm else (top_state,)
        hidden.append(top_state[0])  # a<t>: [1, B, H]
    last_loss = F.cross_entropy(model.decoder(hidden[-1][0]), targets[-1])
    grads = torch.autograd.grad(last_loss, hidden)
    return torch.stack([g.norm() for g in grads])


def window(vocab: int, steps: int, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (steps + 1, batch), generator=generator)
    return tokens[:-1], tokens[1:]


def test_monitor_equals_direct_autograd_for_a_vanilla_rnn():
    torch.manual_seed(0)
    config = ModelConfig(cell="rnn", embedding_size=3, hidden_size=4, num_layers=1, dropout=0.3)
    model = RNNLanguageModel(7, config)
    inputs, targets = window(7, steps=6, batch=2, seed=1)
    state = [(torch.randn(2, 4),)]
    norms = gradient_flow(model, inputs, targets, state)
    model.eval()
    expected = reference_norms(model, inputs, targets, state, model.layers[-1].to_native(), lstm=False)
    assert norms.shape == (6,)
    assert_close(norms, expected.detach())
    # The textbook picture: in a vanilla RNN the gradient shrinks going back in time.
    assert norms[0] < norms[-1]


def test_monitor_equals_direct_autograd_for_a_two_layer_lstm_and_leaves_the_model_alone():
    torch.manual_seed(1)
    config = ModelConfig(cell="lstm", embedding_size=5, hidden_size=6, num_layers=2, dropout=0.5)
    model = RNNLanguageModel(9, config)
    model.train()
    inputs, targets = window(9, steps=8, batch=3, seed=2)
    state = [(torch.randn(3, 6), torch.randn(3, 6)) for _ in range(2)]
    rng_before = torch.get_rng_state()
    norms = gradient_flow(model, inputs, targets, state)
    assert torch.equal(torch.get_rng_state(), rng_before)  # no dropout masks drawn: training unaffected
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())  # .grad untouched
    assert "forward" not in vars(model.layers[-1])  # the layer's own forward is back
    model.eval()
    expected = reference_norms(model, inputs, targets, state, model.layers[-1].to_native(), lstm=True)
    assert_close(norms, expected.detach())


def test_gradient_flow_figure_draws_each_norm_as_a_bar_on_a_log_scale(tmp_path):
    norms = [1e-6, 1e-4, 1e-2, 1.0]
    figure = gradient_flow_figure(norms)
    (ax,) = figure.axes
    assert [bar.get_height() for bar in ax.patches] == norms
    assert [bar.get_x() + bar.get_width() / 2 for bar in ax.patches] == [1, 2, 3, 4]  # t = 1..T
    assert list(ax.get_xticks()) == [1, 2, 3, 4]
    assert ax.get_yscale() == "log"
    # Equal steps of two decades are equal steps on the page: the y axis is logarithmic.
    tops = ax.transData.transform([(1, norm) for norm in norms])[:, 1]
    steps = [float(b - a) for a, b in zip(tops, tops[1:], strict=False)]
    assert steps[0] > 0 and steps == pytest.approx([steps[0]] * 3)
    assert ax.get_xlabel() == "step t of the training window (the loss is at t = T = 4)"
    assert r"\partial L" in ax.get_ylabel() and r"\partial a" in ax.get_ylabel()
    assert ax.get_title().startswith("gradient flow through the top layer") and "1.0e-06" in ax.get_title()
    path = tmp_path / "flow.png"
    save_figure(figure, path, dpi=100)
    assert png_size(path) == (640, 360)


def test_gradient_flow_figure_leaves_out_a_norm_of_zero(tmp_path):
    figure = gradient_flow_figure([0.0, 1e-3, 1.0])
    save_figure(figure, tmp_path / "flow.png", dpi=50)  # draws: a log scale with a 0 on it is no error
    assert png_size(tmp_path / "flow.png") == (320, 180)
    (ax,) = figure.axes
    assert [bar.get_height() for bar in ax.patches] == [0.0, 1e-3, 1.0]
    assert ax.get_ylim()[0] > 0
