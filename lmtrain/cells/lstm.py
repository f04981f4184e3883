"""The long short-term memory layer of the notes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmtrain.cells.base import RecurrentLayer, State, Step
from lmtrain.cells.lstm_bptt import candidate_doubled, lstm_window
from lmtrain.cells.panels import ColumnPanels
from lmtrain.kernels.generate import GenerationKernels, LSTMLayerStep


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

    def _run_window(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """The whole window through ``lstm_window``: a hand-written backward through time that computes
        every weight gradient as one matrix product after the loop (see ``lstm_bptt``)."""
        a_prev, c_prev = state
        y, c = lstm_window(x, self.weight_ax, self.bias, self.weight_aa, a_prev, c_prev)
        return y, (y[-1], c)

    def _kernel_step(self, kernels: GenerationKernels, embedding: Tensor | None) -> LSTMLayerStep:
        """One C call a token (``GenerationKernels.lstm_layer``): z = (the folded embedding's row, or
        b + W_ax x) + W_aa a<t-1>, then the gates, C<t> and a<t>; the state (a, C)."""
        return kernels.lstm_layer(**self._kernel_weights(embedding))

    def _torch_inference_step(self, embedding: Tensor | None) -> Step:
        """The step in torch, laid out as ``lstm_bptt``'s window: the C̃ rows doubled, so that one sigmoid
        activates the whole row (``C̃ = 2 σ(2 z_C̃) - 1``); weights as column panels; one or two matrix
        products and six elementwise operations per step."""
        weight_ax, bias, weight_aa = (
            candidate_doubled(w.detach()) for w in (self.weight_ax, self.bias, self.weight_aa)
        )
        recurrent = ColumnPanels(weight_aa.t())  # W_aa^T [H, 4H], shared out across the cores
        if embedding is not None:
            table = F.linear(embedding.detach(), weight_ax, bias)  # [V, 4H]

            def from_input(tokens: Tensor) -> Tensor:
                return table.index_select(0, tokens)  # [B, 4H]
        else:
            input_panels = ColumnPanels(weight_ax.t())  # W_ax^T [E, 4H]

            def from_input(x_t: Tensor) -> Tensor:
                return input_panels(x_t, bias)  # [B, 4H]

        def step(x_t: Tensor, state: State) -> tuple[Tensor, State]:
            a_prev, c_prev = state
            z = recurrent(a_prev, from_input(x_t)).sigmoid_()  # [B, 4H]: Γ_u, Γ_f, s = σ(2 z_C̃), Γ_o
            update, forget, squashed, output = z.chunk(4, dim=1)
            # C<t> = Γ_f C<t-1> + Γ_u C̃ with C̃ = 2s - 1
            c = torch.mul(forget, c_prev).addcmul_(update, squashed, value=2).sub_(update)
            a = torch.tanh(c).mul_(output)  # a<t>
            return a, (a, c)

        return step

    def _cell(self, x_proj_t: Tensor, state: State) -> tuple[Tensor, State]:
        a_prev, c_prev = state  # [B, H] each
        gates = torch.addmm(x_proj_t, a_prev, self.weight_aa.t())  # [B, 4H]
        update, forget, candidate, output = gates.chunk(4, dim=1)  # [B, H] each
        c = torch.sigmoid(update) * torch.tanh(candidate) + torch.sigmoid(forget) * c_prev  # C<t>
        a = torch.sigmoid(output) * torch.tanh(c)  # a<t>
        return a, (a, c)
