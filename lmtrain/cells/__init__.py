"""Recurrent layers (rnn, gru, lstm) that run a whole time-major BPTT window per call.

Every layer maps ``x`` ``[T, B, input_size]`` and a state tuple to ``y`` ``[T, B, H]`` and the new state;
see ``base.RecurrentLayer`` for the shared interface and parameter layout.
"""

from lmtrain.cells.base import RecurrentLayer, State
from lmtrain.cells.gru import GRULayer
from lmtrain.cells.lstm import LSTMLayer
from lmtrain.cells.rnn import NONLINEARITIES, RNNLayer

CELLS: dict[str, type[RecurrentLayer]] = {"rnn": RNNLayer, "gru": GRULayer, "lstm": LSTMLayer}
"""The recurrent layer classes by the name a config uses."""


def build_layer(cell: str, input_size: int, hidden_size: int, nonlinearity: str = "tanh") -> RecurrentLayer:
    """A fresh layer of the named cell.

    ``nonlinearity`` (``tanh`` | ``relu``) is the activation of the plain rnn; gru and lstm have their
    activations fixed by their equations and ignore it, but an unknown name is refused for every cell so
    that a typo in a config never passes silently.
    """
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; choose one of: {', '.join(CELLS)}")
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"unknown nonlinearity {nonlinearity!r}; choose one of: {', '.join(NONLINEARITIES)}")
    if cell == "rnn":
        return RNNLayer(input_size, hidden_size, nonlinearity=nonlinearity)
    return CELLS[cell](input_size, hidden_size)


__all__ = [
    "CELLS",
    "GRULayer",
    "LSTMLayer",
    "NONLINEARITIES",
    "RNNLayer",
    "RecurrentLayer",
    "State",
    "build_layer",
]
