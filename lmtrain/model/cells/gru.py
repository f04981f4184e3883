"""The gated recurrent unit, in two variants.

``GRULayer`` is the notes' formulation (Cho et al. 2014): the reset gate multiplies ``c<t-1>`` before the
recurrent product. ``CudnnGRULayer`` applies the reset gate after the recurrent product, as cuDNN and
``torch.nn.GRU`` do, which lets its weights be exchanged with ``nn.GRU``. The two are different functions
of their weights; both keep the notes' update-gate convention ``c<t> = Γ_u * c̃<t> + (1 - Γ_u) * c<t-1>``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lmtrain.model.cells.base import RecurrentLayer, State


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
    (rows 2H:3H of ``weight_aa``) runs after the gates, a second matrix product per step. Torch's
    ``nn.GRU`` applies the reset gate after the product instead, a different function: use
    ``CudnnGRULayer`` (``gru_variant: cudnn``) to exchange weights with it.
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


class CudnnGRULayer(RecurrentLayer):
    """A gated recurrent unit with the reset gate after the recurrent product (cuDNN's and ``nn.GRU``'s):

        Γ_u    = σ(W_u [c<t-1>, x<t>] + b_u)
        Γ_r    = σ(W_r [c<t-1>, x<t>] + b_r)
        c̃<t>   = tanh(W_cx x<t> + b_c + Γ_r * (W_ca c<t-1> + b_ca))
        c<t>   = Γ_u * c̃<t> + (1 - Γ_u) * c<t-1>

    where ``W_c = [W_ca | W_cx]``. Only the third line differs from the notes' ``GRULayer``: Γ_r scales
    the recurrent product rather than ``c<t-1>``, so all three recurrent products are one matrix product
    per step, and the candidate needs a second bias ``b_ca`` inside the reset gate.

    Parameters: as ``GRULayer`` (blocks u, r, c̃ in ``weight_aa`` ``[3H, H]``, ``weight_ax``
    ``[3H, input_size]``, ``bias`` ``[3H]``), plus ``recurrent_candidate_bias`` ``[H]``, the ``b_ca``.

    Conversion with ``nn.GRU`` (``to_native`` / ``from_native``): torch stacks its gates r, z, n and
    computes ``h' = (1 - z) * n + z * h``, so its z is ``1 - Γ_u = σ(-(W_u [...] + b_u))``: the u block is
    torch's z block negated. Torch's ``b_ih + b_hh`` sum into our ``b_u`` (negated) and ``b_r``; its
    ``b_in`` is our ``b_c`` and its ``b_hn`` our ``b_ca``.
    """

    num_gates = 3
    native_type = nn.GRU

    def _register_extra_parameters(self, factory: dict) -> None:
        self.recurrent_candidate_bias = nn.Parameter(torch.empty(self.hidden_size, **factory))

    def reset_parameters(self) -> None:
        """The ``init`` scheme; ``b_ca`` from torch's U(-1/sqrt(H), 1/sqrt(H)) under ``default``, else 0."""
        super().reset_parameters()
        with torch.no_grad():
            if self.init == "default":
                bound = 1.0 / math.sqrt(self.hidden_size)
                nn.init.uniform_(self.recurrent_candidate_bias, -bound, bound)
            else:
                self.recurrent_candidate_bias.zero_()

    def _cell(self, x_proj_t: Tensor, state: State) -> tuple[Tensor, State]:
        (c_prev,) = state  # [B, H]
        hidden = self.hidden_size
        recurrent = torch.mm(c_prev, self.weight_aa.t())  # W_aa c<t-1> for all three blocks: [B, 3H]
        x_gates, x_candidate = x_proj_t.split([2 * hidden, hidden], dim=1)  # [B, 2H], [B, H]
        a_gates, a_candidate = recurrent.split([2 * hidden, hidden], dim=1)  # [B, 2H], [B, H]
        update, reset = torch.sigmoid(x_gates + a_gates).chunk(2, dim=1)  # Γ_u, Γ_r: [B, H] each
        candidate = torch.tanh(
            torch.addcmul(
                x_candidate, reset, a_candidate + self.recurrent_candidate_bias.to(a_candidate.dtype)
            )
        )  # c̃<t>: [B, H]
        c = torch.lerp(c_prev, candidate, update)  # Γ_u * c̃<t> + (1 - Γ_u) * c<t-1>: [B, H]
        return c, (c,)

    def _to_native_tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        def torch_order(stacked: Tensor) -> Tensor:  # our (u, r, c̃) -> torch's (r, z = -u, n)
            update, reset, candidate = stacked.chunk(3, dim=0)
            return torch.cat([reset, -update, candidate])

        zeros = torch.zeros(2 * self.hidden_size, dtype=self.bias.dtype, device=self.bias.device)
        bias_hh = torch.cat([zeros, self.recurrent_candidate_bias])
        return torch_order(self.weight_ax), torch_order(self.weight_aa), torch_order(self.bias), bias_hh

    def _load_native_tensors(
        self, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor, bias_hh: Tensor
    ) -> None:
        def our_order(stacked: Tensor) -> Tensor:  # torch's (r, z, n) -> our (u = -z, r, c̃)
            reset, keep, candidate = stacked.chunk(3, dim=0)
            return torch.cat([-keep, reset, candidate])

        hidden = self.hidden_size
        self.weight_ax.copy_(our_order(weight_ih))
        self.weight_aa.copy_(our_order(weight_hh))
        gate_bias = bias_ih[: 2 * hidden] + bias_hh[: 2 * hidden]  # both add to the r and z pre-activations
        self.bias.copy_(our_order(torch.cat([gate_bias, bias_ih[2 * hidden :]])))
        self.recurrent_candidate_bias.copy_(bias_hh[2 * hidden :])
