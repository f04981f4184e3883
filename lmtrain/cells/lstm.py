"""The long short-term memory layer of the notes."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lmtrain.cells.base import RecurrentLayer, State


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
    u, f, C̃, o (G = 4), the same as torch's i, f, g, o, so conversion is a plain copy: ``weight_aa``
    ``[4H, H]``, ``weight_ax`` ``[4H, input_size]``, ``bias`` ``[4H]``; each gate's
    ``W = torch.cat([weight_aa, weight_ax], dim=1)`` restricted to its block of H rows.
    """

    num_gates = 4
    num_states = 2
    state_names = ("a", "c")

    def reset_parameters(self) -> None:
        """PyTorch's default uniform init, then the forget-gate bias b_f set to 1.

        A forget bias of 1 starts Γ_f near σ(1) ≈ 0.73, so the memory cell carries information (and
        gradient) across many steps from the start of training instead of being mostly erased; Jozefowicz,
        Zaremba & Sutskever (2015), "An Empirical Exploration of Recurrent Network Architectures".
        """
        super().reset_parameters()
        with torch.no_grad():
            self.bias[self.hidden_size : 2 * self.hidden_size].fill_(1.0)

    def _cell(self, x_proj_t: Tensor, state: State) -> tuple[Tensor, State]:
        a_prev, c_prev = state  # [B, H] each
        gates = torch.addmm(x_proj_t, a_prev, self.weight_aa.t())  # [B, 4H]
        update, forget, candidate, output = gates.chunk(4, dim=1)  # [B, H] each
        c = torch.sigmoid(update) * torch.tanh(candidate) + torch.sigmoid(forget) * c_prev  # C<t>
        a = torch.sigmoid(output) * torch.tanh(c)  # a<t>
        return a, (a, c)

    def to_torch(self) -> nn.LSTM:
        """An ``nn.LSTM`` (one layer, unidirectional, ``batch_first=False``) computing the same function."""
        module = nn.LSTM(
            self.input_size, self.hidden_size, device=self.weight_aa.device, dtype=self.weight_aa.dtype
        )
        return self._copy_into_torch(module)

    @classmethod
    def from_torch(cls, module: nn.LSTM) -> LSTMLayer:
        """The layer computing the same function as a one-layer, unidirectional ``nn.LSTM`` (no proj_size).

        Torch's two biases ``b_ih + b_hh`` sum into our single ``bias``. ``batch_first`` does not change
        the weights, so it is accepted; our layer is time-major regardless. Torch's state ``(h, c)`` is our
        ``(a, c)``, but torch's carries a leading ``num_layers`` dimension of 1.
        """
        cls._check_convertible(module, nn.LSTM, cls.__name__)
        weight = module.weight_ih_l0
        layer = cls(module.input_size, module.hidden_size, device=weight.device, dtype=weight.dtype)
        layer._load_from_torch(module)
        return layer
