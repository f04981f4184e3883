"""The gradient-flow monitor measures ‖∂L<T>/∂a<t>‖ exactly, costs nothing when off, and draws its plot."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.testing import assert_close

from lmtrain.analysis.grad_flow import gradient_flow, profile_image
from lmtrain.config import ModelConfig
from lmtrain.model import RNNLanguageModel


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


def test_profile_image_is_a_log_scale_bar_chart():
    norms = torch.tensor([1e-6, 1e-4, 1e-2, 1.0])
    image = profile_image(norms)
    assert image.dtype == torch.uint8 and image.shape == (3, 240, 480)
    blue = (image[0] == 31) & (image[1] == 119) & (image[2] == 180)  # the bars' colour
    heights = [int(blue[:, column].sum()) for column in (44 + 50, 44 + 160, 44 + 270, 44 + 380)]
    assert heights[0] < heights[1] < heights[2] < heights[3]
    # Equal steps of two decades give equal steps in height: the y axis is logarithmic.
    assert abs((heights[2] - heights[1]) - (heights[1] - heights[0])) <= 2
