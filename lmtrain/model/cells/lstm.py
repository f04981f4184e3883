"""The long short-term memory layer of the notes."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lmtrain.model.cells.base import RecurrentLayer, State


class LSTMLayer(RecurrentLayer):
    """A long short-term memory layer (Hochreiter & Schmidhuber 1997), as in the notes:

        C̃<t> = tanh(W_C [a<t-1>, x<t>] + b_C)
        Γ_u  = σ(W_u [a<t-1>, x<t>] + b_u)
        Γ_f  = σ(W_f [a<t-1>, x<t>] + b_f)
        Γ_o  = σ(W_o [a<t-1>, x<t>] + b_o)
        C<t> = Γ_u * C̃<t> + Γ_f * C<t-1>
        a<t> = Γ_o * tanh(C<t>)

    Shapes: ``x`` ``[T, B, input_size]`` -> ``y`` ``[T, B, H]`` (``y[t] = a<t>``), state ``(a, c)`` with
    ``a = a<t>`` and ``c = C<t>``, each ``[B, H]``. Four gate blocks stacked in the rows in the order
    u, f, C̃, o (G = 4), the same as torch's i, f, g, o, so conversion with ``nn.LSTM`` is a plain copy
    (``to_native`` / ``from_native``; torch's two biases ``b_ih + b_hh`` are our ``b``): ``weight_aa``
    ``[4H, H]``, ``weight_ax`` ``[4H, input_size]``, ``bias`` ``[4H]``; each gate's
    ``W = torch.cat([weight_aa, weight_ax], dim=1)`` restricted to its block of H rows.

    Args:
        forget_bias: the value ``b_f`` starts at, after the ``init`` scheme (default 1).
    """

    num_gates = 4
    cell_options = ("forget_bias",)
    num_states = 2
    state_names = ("a", "c")
    native_type = nn.LSTM

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float = 1.0, **options) -> None:
        self.forget_bias = forget_bias
        super().__init__(input_size, hidden_size, **options)

    def reset_parameters(self) -> None:
        """The ``init`` scheme, then the forget-gate bias b_f set to ``forget_bias`` (1 by default).

        A forget bias of 1 starts Γ_f near σ(1) ≈ 0.73, so the memory cell carries information (and
        gradient) across many steps from the start of training instead of being mostly erased; Jozefowicz,
        Zaremba & Sutskever (2015), "An Empirical Exploration of Recurrent Network Architectures".
        """
        super().reset_parameters()
        with torch.no_grad():
            self.bias[self.hidden_size : 2 * self.hidden_size].fill_(self.forget_bias)

    def _cell(self, x_proj_t: Tensor, state: State) -> tuple[Tensor, State]:
        a_prev, c_prev = state  # [B, H] each
        gates = torch.addmm(x_proj_t, a_prev, self.weight_aa.t())  # [B, 4H]
        update, forget, candidate, output = gates.chunk(4, dim=1)  # [B, H] each
        c = torch.sigmoid(update) * torch.tanh(candidate) + torch.sigmoid(forget) * c_prev  # C<t>
        a = torch.sigmoid(output) * torch.tanh(c)  # a<t>
        return a, (a, c)
