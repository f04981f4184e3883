"""The plain (Elman) recurrent layer of the notes' "Simplified RNN Notation"."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lmtrain.model.cells.base import RecurrentLayer, State

NONLINEARITIES = {"tanh": torch.tanh, "relu": torch.relu}
"""The activation g of the hidden state, by name."""


class RNNLayer(RecurrentLayer):
    """A plain recurrent layer:

        a<t> = g(W_a [a<t-1>, x<t>] + b_a),    g = tanh or relu,    W_a = [W_aa | W_ax]

    Shapes: ``x`` ``[T, B, input_size]`` -> ``y`` ``[T, B, H]`` (``y[t] = a<t>``), state ``(a,)`` with
    ``a`` ``[B, H]``. One gate block (G = 1): ``weight_aa`` ``[H, H]``, ``weight_ax`` ``[H, input_size]``,
    ``bias`` ``[H]``, and ``W_a = torch.cat([weight_aa, weight_ax], dim=1)``.

    Matches ``nn.RNN`` exactly (``to_native`` / ``from_native``): ``weight_ih = W_ax``,
    ``weight_hh = W_aa``, and torch's two biases ``b_ih + b_hh`` are our ``b_a``. With ``relu`` and
    ``init="identity"`` this is the IRNN of Le, Jaitly & Hinton (2015).
    """

    num_gates = 1
    cell_options = ("nonlinearity",)
    native_type = nn.RNN

    def __init__(self, input_size: int, hidden_size: int, nonlinearity: str = "tanh", **options) -> None:
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(
                f"unknown nonlinearity {nonlinearity!r}; choose one of: {', '.join(NONLINEARITIES)}"
            )
        self.nonlinearity = nonlinearity
        self._activation = NONLINEARITIES[nonlinearity]
        super().__init__(input_size, hidden_size, **options)

    def _cell(self, x_proj_t: Tensor, state: State) -> tuple[Tensor, State]:
        (a_prev,) = state  # [B, H]
        a = self._activation(torch.addmm(x_proj_t, a_prev, self.weight_aa.t()))  # [B, H]
        return a, (a,)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, nonlinearity={self.nonlinearity!r}"

    def _native_options(self) -> dict:
        return {"nonlinearity": self.nonlinearity}

    @classmethod
    def _options_from_native(cls, module: nn.RNNBase) -> dict:
        return {"nonlinearity": module.nonlinearity}
