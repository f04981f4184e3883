"""Weight exchange between stacks of our layers and multi-layer ``torch.nn.RNN`` / ``LSTM`` / ``GRU``.

One layer converts with its own ``to_native()`` / ``from_native(module, index)`` and
``native_state_dict(index)`` / ``load_native_state_dict(state_dict, index)``; these functions do the same
for a whole stack, such as ``RNNLanguageModel.layers``. Torch's multi-layer module feeds layer k's output
to layer k + 1, exactly as our stack does when dropout is 0 (torch's own ``dropout`` argument is left 0:
dropout is the model's business, not the cells').

    ours                                     torch (layer k)
    RNNLayer       weight_ax, weight_aa      nn.RNN   weight_ih_lk, weight_hh_lk
    LSTMLayer      bias = b_ih + b_hh        nn.LSTM  bias_ih_lk (= bias), bias_hh_lk (= 0)
    CudnnGRULayer  (u, r, c̃) with u = -z     nn.GRU   (r, z, n), see CudnnGRULayer
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from lmtrain.model.cells.base import RecurrentLayer
from lmtrain.model.cells.gru import CudnnGRULayer
from lmtrain.model.cells.lstm import LSTMLayer
from lmtrain.model.cells.rnn import RNNLayer

FROM_NATIVE: dict[type[nn.RNNBase], type[RecurrentLayer]] = {
    nn.RNN: RNNLayer,
    nn.LSTM: LSTMLayer,
    nn.GRU: CudnnGRULayer,
}
"""Our layer class for each torch module class."""


def stack_to_native(layers: Sequence[RecurrentLayer]) -> nn.RNNBase:
    """One multi-layer torch module (unidirectional, time-major, no dropout) computing what the stack does.

    The layers must be of one convertible class with the same options (the rnn's nonlinearity), each
    ``hidden_size`` the same and each layer's input the previous layer's output.
    """
    if not layers:
        raise ValueError("stack_to_native needs at least one layer")
    first = layers[0]
    first._require_native("stack_to_native")
    for index, layer in enumerate(layers[1:], start=1):
        if type(layer) is not type(first) or layer._native_options() != first._native_options():
            raise ValueError(
                f"stack_to_native: layer {index} ({layer.extra_repr()}) is not the same kind of layer as "
                f"layer 0 ({first.extra_repr()}); a torch module has one cell type for all its layers"
            )
        if layer.input_size != first.hidden_size or layer.hidden_size != first.hidden_size:
            raise ValueError(
                f"stack_to_native: layer {index} maps {layer.input_size} -> {layer.hidden_size}, but a torch "
                f"module's upper layers map hidden_size -> hidden_size ({first.hidden_size})"
            )
    module = first.native_type(
        first.input_size,
        first.hidden_size,
        num_layers=len(layers),
        **first._native_options(),
        device=first.weight_ax.device,
        dtype=first.weight_ax.dtype,
    )
    state_dict = {}
    for index, layer in enumerate(layers):
        state_dict.update(layer.native_state_dict(index))
    module.load_state_dict(state_dict)
    return module


def stack_from_native(module: nn.RNNBase) -> nn.ModuleList:
    """Our layers, one per layer of a unidirectional torch ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``."""
    layer_class = FROM_NATIVE.get(type(module))
    if layer_class is None:
        raise ValueError(
            f"stack_from_native expects an nn.RNN, nn.LSTM or nn.GRU, got {type(module).__name__}"
        )
    return nn.ModuleList(layer_class.from_native(module, index) for index in range(module.num_layers))
