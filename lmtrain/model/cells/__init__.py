"""Recurrent layers (rnn, gru, lstm, esn) that run a whole time-major BPTT window per call.

Every layer maps ``x`` ``[T, B, input_size]`` and a state tuple to ``y`` ``[T, B, H]`` and the new state;
see ``base.RecurrentLayer`` for the shared interface and parameter layout, and ``native`` for the
exchange of weights with ``torch.nn.RNN`` / ``LSTM`` / ``GRU``.
"""

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


def build_layer(
    cell: str,
    input_size: int,
    hidden_size: int,
    nonlinearity: str = "tanh",
    *,
    gru_variant: str = "notes",
    init: str = "default",
    initial_state: str = "zeros",
    initial_state_scale: float = 0.1,
    spectral_radius: float = 0.9,
    forget_bias: float = 1.0,
    impl: str = "auto",
) -> RecurrentLayer:
    """A fresh layer of the named cell.

    ``nonlinearity`` (``tanh`` | ``relu``) is the activation of rnn and esn, ``gru_variant`` (``notes`` |
    ``cudnn``) picks the GRU formulation, ``spectral_radius`` is the esn's and ``forget_bias`` the lstm's;
    each class takes the options it names in ``cell_options`` and ignores the others, but an unknown name
    is refused for every cell so that a typo in a config never passes silently. ``init``,
    ``initial_state``, ``initial_state_scale`` and ``impl`` (see ``lmtrain.model.backends``) apply to every
    cell.
    """
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"unknown nonlinearity {nonlinearity!r}; choose one of: {', '.join(NONLINEARITIES)}")
    chosen = layer_class(cell, gru_variant)
    offered = {"nonlinearity": nonlinearity, "spectral_radius": spectral_radius, "forget_bias": forget_bias}
    own = {name: offered[name] for name in chosen.cell_options}
    return chosen(
        input_size,
        hidden_size,
        init=init,
        initial_state=initial_state,
        initial_state_scale=initial_state_scale,
        impl=impl,
        **own,
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
