"""The fast layer's generation steps: one C call a token for a few streams, torch laid out for many.

``step_factory(layer, embedding)`` is what ``lmtrain.model.backends.GENERATION_STEPS`` holds for each
cell class: for up to ``FEW_STREAMS`` fp32 CPU streams, where the C kernels build, a step is one C call
that reads every weight once (``kernel_step``, ``lmtrain.fast.kernels.generate``); for more streams it is
the cell's many-stream step (the LSTM's below, the reference step for the others).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lmtrain.fast.kernels import fused_applies
from lmtrain.fast.kernels.generate import (
    GenerationKernels,
    PackedLayerStep,
    by_stream_count,
    generation_kernels,
)
from lmtrain.fast.lstm_window import candidate_doubled
from lmtrain.fast.panels import ColumnPanels
from lmtrain.model.cells import CudnnGRULayer, ESNLayer, GRULayer, LSTMLayer, RecurrentLayer, RNNLayer
from lmtrain.model.cells.base import State, Step


def kernel_weights(layer: RecurrentLayer, embedding: Tensor | None) -> dict[str, Tensor]:
    """A ``GenerationKernels`` layer's weights: ``weight_aa``, and the folded ``table`` (with
    ``embedding``: ``b + W_ax e`` for every token, ``[V, G*H]``) or ``bias`` and ``weight_ax``."""
    weight_ax, bias, weight_aa = (
        w.detach().contiguous() for w in (layer.weight_ax, layer.bias, layer.weight_aa)
    )
    if embedding is not None:
        return {"weight_aa": weight_aa, "table": F.linear(embedding.detach(), weight_ax, bias)}
    return {"weight_aa": weight_aa, "bias": bias, "weight_ax": weight_ax}


def _lstm_kernel(kernels: GenerationKernels, layer: LSTMLayer, embedding: Tensor | None) -> PackedLayerStep:
    """z = (the folded embedding's row, or b + W_ax x) + W_aa a<t-1>, then the gates, C<t> and a<t>."""
    return kernels.lstm_layer(**kernel_weights(layer, embedding))


def _gru_kernel(kernels: GenerationKernels, layer: GRULayer, embedding: Tensor | None) -> PackedLayerStep:
    """The notes' GRU step."""
    return kernels.gru_layer(**kernel_weights(layer, embedding))


def _cudnn_gru_kernel(
    kernels: GenerationKernels, layer: CudnnGRULayer, embedding: Tensor | None
) -> PackedLayerStep:
    """The cuDNN GRU step: the notes' kernel with the recurrent candidate bias ``b_ca``."""
    candidate_bias = layer.recurrent_candidate_bias.detach().contiguous()
    return kernels.gru_layer(**kernel_weights(layer, embedding), candidate_bias=candidate_bias)


def _rnn_kernel(kernels: GenerationKernels, layer: RNNLayer, embedding: Tensor | None) -> PackedLayerStep:
    """The plain rnn's step (the echo state network's too: the same equation)."""
    return kernels.rnn_layer(relu=layer.nonlinearity == "relu", **kernel_weights(layer, embedding))


KERNEL_STEPS = {
    LSTMLayer: _lstm_kernel,
    GRULayer: _gru_kernel,
    CudnnGRULayer: _cudnn_gru_kernel,
    RNNLayer: _rnn_kernel,
    ESNLayer: _rnn_kernel,
}
"""The C generation step of each cell class."""


def kernel_step(layer: RecurrentLayer, embedding: Tensor | None = None) -> PackedLayerStep | None:
    """The layer's step on the C generation kernels, its weights packed now: ``layer_step(inputs, *state)
    -> new state``, whose first tensor is the output ``y_t``, and ``layer_step.bind`` for loops that reuse
    their buffers. None where the kernels do not apply: not fp32 on the CPU, no C kernels here, or a cell
    without one."""
    make = KERNEL_STEPS.get(type(layer))
    kernels = generation_kernels() if make is not None and fused_applies(layer.weight_aa) else None
    return None if kernels is None else make(kernels, layer, embedding)


def lstm_many_streams_step(layer: LSTMLayer, embedding: Tensor | None) -> Step:
    """The LSTM step in torch, laid out as ``lstm_window``'s: the C̃ rows doubled, so that one sigmoid
    activates the whole row (``C̃ = 2 σ(2 z_C̃) - 1``); weights as column panels; one or two matrix
    products and six elementwise operations per step."""
    weight_ax, bias, weight_aa = (
        candidate_doubled(w.detach()) for w in (layer.weight_ax, layer.bias, layer.weight_aa)
    )
    recurrent = ColumnPanels(weight_aa.t())  # W_aa^T [H, 4H], shared out across the cores
    if embedding is not None:
        table = F.linear(embedding.detach(), weight_ax, bias)  # [V, 4H]

        def from_input(tokens: Tensor) -> Tensor:
            return table.index_select(0, tokens)  # [B, 4H]
    else:
        input_panels = ColumnPanels(weight_ax.t())  # W_ax^T [E, 4H]

        def from_input(x_t: Tensor) -> Tensor:
            return input_panels(x_t, bias)  # [B, 4H]

    def step(x_t: Tensor, state: State) -> tuple[Tensor, State]:
        a_prev, c_prev = state
        z = recurrent(a_prev, from_input(x_t)).sigmoid_()  # [B, 4H]: Γ_u, Γ_f, s = σ(2 z_C̃), Γ_o
        update, forget, squashed, output = z.chunk(4, dim=1)
        # C<t> = Γ_f C<t-1> + Γ_u C̃ with C̃ = 2s - 1
        c = torch.mul(forget, c_prev).addcmul_(update, squashed, value=2).sub_(update)
        a = torch.tanh(c).mul_(output)  # a<t>
        return a, (a, c)

    return step


def step_factory(layer: RecurrentLayer, embedding: Tensor | None) -> Step:
    """The generation step of ``layer`` (see the module)."""

    def many_streams() -> Step:
        if isinstance(layer, LSTMLayer):
            return lstm_many_streams_step(layer, embedding)
        return layer.reference_inference_step(embedding)

    layer_step = kernel_step(layer, embedding)
    if layer_step is None:
        return many_streams()

    def fused(inputs: Tensor, state: State) -> tuple[Tensor, State]:
        new_state = layer_step(inputs, *state)
        return new_state[0], new_state

    return by_stream_count(fused, many_streams)


def draw_tokens(probs: Tensor, uniforms: Tensor) -> Tensor | None:
    """``lmtrain.generation.sampling.draw``'s inversion of the cumulative distribution in one C call
    (``GenerationKernels.draw``), or None where the kernels do not apply."""
    kernels = generation_kernels() if fused_applies(probs) else None
    return None if kernels is None else kernels.draw(probs.contiguous(), uniforms)
