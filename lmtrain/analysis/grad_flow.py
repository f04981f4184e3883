"""Gradient flow through time: how far back the loss at the end of a window reaches.

For a training window of T steps the monitor measures, for the top recurrent layer,

    g<t> = ‖∂L<T>/∂a<t>‖,    t = 1..T

where L<T> is the mean cross-entropy of the window's last position over the B streams, a<t> the
layer's hidden state `[B, H]` after step t, and the norm the L2 norm over the whole `[B, H]`
gradient. By the chain rule, ∂L<T>/∂a<t> = ∂L<T>/∂a<T> · ∂a<T>/∂a<T-1> ··· ∂a<t+1>/∂a<t>, a product
of T - t Jacobians. In a vanilla RNN they shrink the gradient geometrically (the notes' vanishing
gradients), so g<t> falls by orders of magnitude as t goes back towards 1; an LSTM's cell path
`C<t> = Γ_f * C<t-1> + ...` lets it persist.

Why L<T> rather than the whole window's loss: for L = Σ_s L<s>, ∂L/∂a<t> also collects the short
paths from the losses just after t, at every t, which hides the decay; the last position's loss alone
shows how far back one prediction's gradient reaches.

The layers run whole windows, `layer(x, state) -> (y, state)`, and keep their per-step states to
themselves, so while measuring, the top layer's `forward` is shadowed by a loop over the same
layer's `step` (which computes exactly what `forward` computes) that keeps every a<t>; the model's
own forward does the rest. It runs in eval mode, so dropout is off and no random numbers are
drawn (a run with the monitor trains exactly like one without), and takes gradients with
`torch.autograd.grad`, leaving the parameters' `.grad` alone. With `log.grad_flow` off none of
this code runs: the training step is never instrumented. The plot of g<t> is
`lmtrain.analysis.plots.gradient_flow_figure`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmtrain.data.batching import State
from lmtrain.model.language_model import RNNLanguageModel


@contextmanager
def recording_hidden_states(layer: nn.Module) -> Iterator[list[Tensor]]:
    """While active, `layer(x, state)` runs `layer.step` once per time step and keeps every a<t>.

    Yields the list that each call fills with its T hidden states `[B, H]`. The layer object stays in
    place (only its `forward` is shadowed), so the model around it runs unchanged.
    """
    hidden: list[Tensor] = []

    def stepped_forward(x: Tensor, state: tuple[Tensor, ...] | None = None) -> tuple[Tensor, tuple]:
        hidden.clear()
        for x_t in x.unbind(0):  # each [B, I]
            y_t, state = layer.step(x_t, state)
            # a<t> must be the one tensor feeding both the layer above and the next step, or its
            # gradient would miss one of the two paths.
            if y_t is not state[0]:
                raise TypeError(f"{type(layer).__name__}.step must return its hidden state a<t> as output")
            hidden.append(y_t)
        return torch.stack(hidden), state  # [T, B, H]

    layer.forward = stepped_forward
    try:
        yield hidden
    finally:
        del layer.forward


def gradient_flow(
    model: RNNLanguageModel, inputs: Tensor, targets: Tensor, state: State | None = None
) -> Tensor:
    """‖∂L<T>/∂a<t>‖ for t = 1..T of the top layer, on a window `inputs`/`targets` `[T, B]`: a CPU `[T]`."""
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), recording_hidden_states(model.layers[-1]) as hidden:
            logits, _ = model(inputs, state)  # [T, B, V]
            last_loss = F.cross_entropy(logits[-1], targets[-1])  # L<T>, mean over the B streams
            grads = torch.autograd.grad(last_loss, hidden)  # T tensors [B, H]
    finally:
        model.train(was_training)
    return torch.stack([grad.norm() for grad in grads]).detach().float().cpu()
