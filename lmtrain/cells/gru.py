"""The gated recurrent unit in the notes' formulation (reset gate applied before the recurrent product)."""

from __future__ import annotations

import torch
from torch import Tensor

from lmtrain.cells.base import RecurrentLayer, State


class GRULayer(RecurrentLayer):
    """A gated recurrent unit, as in the notes (Cho et al. 2014), with ``a<t> = c<t>``:

        Γ_u    = σ(W_u [c<t-1>, x<t>] + b_u)
        Γ_r    = σ(W_r [c<t-1>, x<t>] + b_r)
        c̃<t>   = tanh(W_c [Γ_r * c<t-1>, x<t>] + b_c)
        c<t>   = Γ_u * c̃<t> + (1 - Γ_u) * c<t-1>

    Shapes: ``x`` ``[T, B, input_size]`` -> ``y`` ``[T, B, H]`` (``y[t] = a<t> = c<t>``), state ``(a,)``
    with ``a`` ``[B, H]``. Three gate blocks stacked in the rows in the order u, r, c̃ (G = 3):
    ``weight_aa`` ``[3H, H]``, ``weight_ax`` ``[3H, input_size]``, ``bias`` ``[3H]``; each gate's
    ``W = torch.cat([weight_aa, weight_ax], dim=1)`` restricted to its block of H rows.

    Because Γ_r multiplies ``c<t-1>`` before the recurrent product, the candidate's recurrent product
    (rows 2H:3H of ``weight_aa``) runs after the gates. Torch's ``nn.GRU`` instead applies the reset gate
    after the product (``r * (W_hn h + b_hn)``), so the two are different functions and there is no
    conversion to or from it.
    """

    num_gates = 3

    def _cell(self, x_proj_t: Tensor, state: State) -> tuple[Tensor, State]:
        (c_prev,) = state  # [B, H]
        hidden = self.hidden_size
        x_gates, x_candidate = x_proj_t.split([2 * hidden, hidden], dim=1)  # [B, 2H], [B, H]
        gates = torch.sigmoid(torch.addmm(x_gates, c_prev, self.weight_aa[: 2 * hidden].t()))  # [B, 2H]
        update, reset = gates.chunk(2, dim=1)  # Γ_u, Γ_r: [B, H] each
        candidate = torch.tanh(
            torch.addmm(x_candidate, reset * c_prev, self.weight_aa[2 * hidden :].t())
        )  # c̃<t>: [B, H]
        # lerp(c<t-1>, c̃<t>, Γ_u) = c<t-1> + Γ_u * (c̃<t> - c<t-1>) = Γ_u * c̃<t> + (1 - Γ_u) * c<t-1>.
        c = torch.lerp(c_prev, candidate, update)  # [B, H]
        return c, (c,)
