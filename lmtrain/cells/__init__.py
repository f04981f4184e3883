"""Recurrent layers (rnn, gru, lstm, esn) that run a whole time-major BPTT window per call.

Every layer maps ``x`` ``[T, B, input_size]`` and a state tuple to ``y`` ``[T, B, H]`` and the new state;
see ``base.RecurrentLayer`` for the shared interface and parameter layout, and ``native`` for the
exchange of weights with ``torch.nn.RNN`` / ``LSTM`` / ``GRU``.
"""

from lmtrain.cells.base import IMPLS, INITIAL_STATES, INITS, RecurrentLayer, State
from lmtrain.cells.esn import ESNLayer
from lmtrain.cells.gru import CudnnGRULayer, GRULayer
from lmtrain.cells.lstm import LSTMLayer
from lmtrain.cells.native import stack_from_native, stack_to_native
from lmtrain.cells.rnn import NONLINEARITIES, RNNLayer

CELLS: dict[str, type[RecurrentLayer]] = {
    "rnn": RNNLayer,
    "gru": GRULayer,
    "lstm": LSTMLayer,
    "esn": ESNLayer,
}
"""The recurrent layer classes by the name a config uses (``gru`` is the notes' variant)."""

GRU_VARIANTS: dict[str, type[RecurrentLayer]] = {"notes": GRULayer, "cudnn": CudnnGRULayer}
"""The two GRU formulations by the name ``gru_variant`` uses."""


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
    impl: str = "custom",
) -> RecurrentLayer:
    """A fresh layer of the named cell.

    ``nonlinearity`` (``tanh`` | ``relu``) is the activation of rnn and esn, ``gru_variant`` (``notes`` |
    ``cudnn``) picks the GRU formulation, ``spectral_radius`` is the esn's and ``forget_bias`` the lstm's;
    each cell ignores the options that are not its own, but an unknown name is refused for every cell so
    that a typo in a config never passes silently. ``init``, ``initial_state`` and ``initial_state_scale``
    apply to every cell, and so does ``impl`` (``custom`` | ``native``) for the cells with a torch
    counterpart (see ``RecurrentLayer``).
    """
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; choose one of: {', '.join(CELLS)}")
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"unknown nonlinearity {nonlinearity!r}; choose one of: {', '.join(NONLINEARITIES)}")
    if gru_variant not in GRU_VARIANTS:
        raise ValueError(f"unknown gru_variant {gru_variant!r}; choose one of: {', '.join(GRU_VARIANTS)}")
    options = {
        "init": init,
        "initial_state": initial_state,
        "initial_state_scale": initial_state_scale,
        "impl": impl,
    }
    if cell == "rnn":
        return RNNLayer(input_size, hidden_size, nonlinearity, **options)
    if cell == "esn":
        return ESNLayer(input_size, hidden_size, nonlinearity, spectral_radius, **options)
    if cell == "lstm":
        return LSTMLayer(input_size, hidden_size, forget_bias, **options)
    return GRU_VARIANTS[gru_variant](input_size, hidden_size, **options)


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
    "stack_from_native",
    "stack_to_native",
]
