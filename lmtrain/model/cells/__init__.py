"""Recurrent layers (rnn, gru, lstm, esn) that run a whole time-major BPTT window per call.

Every layer maps ``x`` ``[T, B, input_size]`` and a state tuple to ``y`` ``[T, B, H]`` and the new state;
see ``base.RecurrentLayer`` for the shared interface and parameter layout, and ``native`` for the
exchange of weights with ``torch.nn.RNN`` / ``LSTM`` / ``GRU``.
"""

from lmtrain.config import ModelConfig
from lmtrain.model.cells.base import IMPLS, INITIAL_STATES, INITS, RecurrentLayer, State
from lmtrain.model.cells.esn import ESNLayer
from lmtrain.model.cells.gru import CudnnGRULayer, GRULayer
from lmtrain.model.cells.lstm import LSTMLayer
from lmtrain.model.cells.native import stack_from_native, stack_to_native
from lmtrain.model.cells.rnn import NONLINEARITIES, RNNLayer

CELLS: dict[str, type[RecurrentLayer]] = {
    "rnn": RNNLayer,
    "gru": GRULayer,
    "lstm": LSTMLayer,
    "esn": ESNLayer,
}
"""The recurrent layer classes by the name a config uses (``gru`` is the notes' variant)."""

GRU_VARIANTS: dict[str, type[RecurrentLayer]] = {"notes": GRULayer, "cudnn": CudnnGRULayer}
"""The two GRU formulations by the name ``gru_variant`` uses."""


def layer_class(cell: str, gru_variant: str = "notes") -> type[RecurrentLayer]:
    """The layer class a config names: ``CELLS[cell]``, and for ``gru`` the ``GRU_VARIANTS`` entry."""
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; choose one of: {', '.join(CELLS)}")
    if gru_variant not in GRU_VARIANTS:
        raise ValueError(f"unknown gru_variant {gru_variant!r}; choose one of: {', '.join(GRU_VARIANTS)}")
    return GRU_VARIANTS[gru_variant] if cell == "gru" else CELLS[cell]


def build_layer(config: ModelConfig, input_size: int) -> RecurrentLayer:
    """A fresh layer of the cell ``config`` names, from ``input_size`` features to ``config.hidden_size``.

    The class comes from the registry (``layer_class``); it takes the options every cell has (``init``,
    ``initial_state``, ``initial_state_scale``, ``impl``) and those it names in ``cell_options``
    (``nonlinearity`` for rnn and esn, ``spectral_radius`` for esn, ``forget_bias`` for lstm).
    """
    chosen = layer_class(config.cell, config.gru_variant)
    return chosen(
        input_size,
        config.hidden_size,
        init=config.init,
        initial_state=config.initial_state,
        initial_state_scale=config.initial_state_scale,
        impl=config.impl,
        **{name: getattr(config, name) for name in chosen.cell_options},
    )


__all__ = [
    "CELLS",
    "GRU_VARIANTS",
    "IMPLS",
    "INITIAL_STATES",
    "INITS",
    "NONLINEARITIES",
    "CudnnGRULayer",
    "ESNLayer",
    "GRULayer",
    "LSTMLayer",
    "RNNLayer",
    "RecurrentLayer",
    "State",
    "build_layer",
    "layer_class",
    "stack_from_native",
    "stack_to_native",
]
