"""The plain (Elman) recurrent layer of the notes' "Simplified RNN Notation"."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lmtrain.cells.base import RecurrentLayer, State

NONLINEARITIES = {"tanh": torch.tanh, "relu": torch.relu}
"""The activation g of the hidden state, by name."""


class RNNLayer(RecurrentLayer):
    """A plain recurrent layer:

        a<t> = g(W_a [a<t-1>, x<t>] + b_a),    g = tanh or relu,    W_a = [W_aa | W_ax]

    Shapes: ``x`` ``[T, B, input_size]`` -> ``y`` ``[T, B, H]`` (``y[t] = a<t>``), state ``(a,)`` with
    ``a`` ``[B, H]``. One gate block (G = 1): ``weight_aa`` ``[H, H]``, ``weight_ax`` ``[H, input_size]``,
    ``bias`` ``[H]``, and ``W_a = torch.cat([weight_aa, weight_ax], dim=1)``.

    Matches ``nn.RNN`` exactly (see ``to_torch`` / ``from_torch``).
    """

    num_gates = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        nonlinearity: str = "tanh",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(
                f"unknown nonlinearity {nonlinearity!r}; choose one of: {', '.join(NONLINEARITIES)}"
            )
        super().__init__(input_size, hidden_size, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity
        self._activation = NONLINEARITIES[nonlinearity]

    def _cell(self, x_proj_t: Tensor, state: State) -> tuple[Tensor, State]:
        (a_prev,) = state  # [B, H]
        a = self._activation(torch.addmm(x_proj_t, a_prev, self.weight_aa.t()))  # [B, H]
        return a, (a,)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, nonlinearity={self.nonlinearity!r}"

    def to_torch(self) -> nn.RNN:
        """An ``nn.RNN`` (one layer, unidirectional, ``batch_first=False``) computing the same function."""
        module = nn.RNN(
            self.input_size,
            self.hidden_size,
            nonlinearity=self.nonlinearity,
            device=self.weight_aa.device,
            dtype=self.weight_aa.dtype,
        )
        return self._copy_into_torch(module)

    @classmethod
    def from_torch(cls, module: nn.RNN) -> RNNLayer:
        """The layer computing the same function as a one-layer, unidirectional ``nn.RNN``.

        Torch's two biases ``b_ih + b_hh`` sum into our single ``bias``. ``batch_first`` does not change
        the weights, so it is accepted; our layer is time-major regardless.
        """
        cls._check_convertible(module, nn.RNN, cls.__name__)
        weight = module.weight_ih_l0
        layer = cls(
            module.input_size,
            module.hidden_size,
            nonlinearity=module.nonlinearity,
            device=weight.device,
            dtype=weight.dtype,
        )
        layer._load_from_torch(module)
        return layer
