"""The shared base of the recurrent layers: parameters, state creation, shape checks and the time loop.

A layer runs a whole BPTT window per call, time-major:

    layer(x: [T, B, input_size], state) -> (y: [T, B, H], state)

The notes write every gate as one product with the stacked matrix, ``W_a [a<t-1>, x<t>] + b_a``. We store
``W_a`` as its two halves, ``weight_aa`` (acting on ``a<t-1>``) and ``weight_ax`` (acting on ``x<t>``), so
that ``W_a = torch.cat([weight_aa, weight_ax], dim=1)``. The product is the same, but the input half does
not depend on the previous step: ``forward`` computes it for all T steps in one matrix product before the
loop, and only the recurrent half ``weight_aa @ a<t-1>`` stays inside it.

Subclasses say how many gate blocks they stack (``num_gates``), how many tensors their state holds
(``num_states``) and implement ``_cell``, one time step given the precomputed input projection.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

State = tuple[Tensor, ...]
"""A layer's recurrent state: ``(a,)`` for rnn and gru, ``(a, c)`` for lstm, each ``[B, H]``."""


class RecurrentLayer(nn.Module):
    """One unidirectional recurrent layer over a time-major window.

    Parameters, with G = ``num_gates`` gate blocks stacked along the rows in the order the subclass
    documents:

    - ``weight_aa``: ``[G*H, H]``, the recurrent half of the notes' ``W_a``.
    - ``weight_ax``: ``[G*H, input_size]``, the input half of ``W_a``.
    - ``bias``: ``[G*H]``, the stacked ``b`` of every gate.

    ``W_a = torch.cat([weight_aa, weight_ax], dim=1)`` is the notes' stacked matrix ``[G*H, H + input_size]``
    acting on ``[a<t-1>, x<t>]``; keeping the halves apart lets the input half be computed once per window.
    """

    num_gates: int = 1
    """G, the number of ``[H, .]`` gate blocks stacked in the weights."""

    num_states: int = 1
    """How many tensors the state holds: 1 for rnn and gru (``a``), 2 for lstm (``a``, ``c``)."""

    state_names: tuple[str, ...] = ("a",)
    """What each tensor of the state is, in order (``num_states`` of them); used in error messages."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if input_size < 1 or hidden_size < 1:
            raise ValueError(
                f"{type(self).__name__} needs input_size >= 1 and hidden_size >= 1, "
                f"got input_size={input_size}, hidden_size={hidden_size}"
            )
        self.input_size = input_size
        self.hidden_size = hidden_size
        factory = {"device": device, "dtype": dtype}
        rows = self.num_gates * hidden_size
        self.weight_aa = nn.Parameter(torch.empty(rows, hidden_size, **factory))
        self.weight_ax = nn.Parameter(torch.empty(rows, input_size, **factory))
        self.bias = nn.Parameter(torch.empty(rows, **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw every parameter from U(-1/sqrt(H), 1/sqrt(H)), PyTorch's default for its recurrent modules."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def initial_state(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> State:
        """Zeros, each ``[batch_size, H]``; device and dtype default to the weights'."""
        device = self.weight_aa.device if device is None else device
        dtype = self.weight_aa.dtype if dtype is None else dtype
        return tuple(
            torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype) for _ in self.state_names
        )

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Run a whole window.

        Args:
            x: ``[T, B, input_size]``, time-major.
            state: the state before the first step (see ``State``); None means zeros.

        Returns:
            ``y``: ``[T, B, H]``, the output ``a<t>`` of every step, and the state after the last step.
        """
        if x.dim() != 3 or x.shape[0] < 1 or x.shape[2] != self.input_size:
            raise ValueError(
                f"{type(self).__name__} expects input of shape [T >= 1, B, input_size={self.input_size}], "
                f"got {list(x.shape)}"
            )
        state = self._checked_state(state, x)
        # The input half of W_a [a<t-1>, x<t>] + b for every step at once.
        x_proj = F.linear(x, self.weight_ax, self.bias)  # [T, B, G*H]
        outputs = []
        for x_proj_t in x_proj.unbind(0):  # each [B, G*H]
            y_t, state = self._cell(x_proj_t, state)
            outputs.append(y_t)
        return torch.stack(outputs), state  # [T, B, H]

    def step(self, x_t: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Run one time step, for generation: ``x_t`` ``[B, input_size]`` -> (``y_t`` ``[B, H]``, state).

        Computes exactly what one iteration of ``forward``'s loop computes.
        """
        if x_t.dim() != 2 or x_t.shape[1] != self.input_size:
            raise ValueError(
                f"{type(self).__name__}.step expects input of shape [B, input_size={self.input_size}], "
                f"got {list(x_t.shape)}"
            )
        state = self._checked_state(state, x_t)
        return self._cell(F.linear(x_t, self.weight_ax, self.bias), state)

    def _cell(self, x_proj_t: Tensor, state: State) -> tuple[Tensor, State]:
        """One step from ``x_proj_t = weight_ax @ x<t> + bias`` (``[B, G*H]``) and the previous state."""
        raise NotImplementedError

    def _checked_state(self, state: State | None, x: Tensor) -> State:
        """Zeros when ``state`` is None; otherwise check it is a tuple of ``[B, H]`` tensors and return it."""
        batch_size = x.shape[-2]
        if state is None:
            return self.initial_state(batch_size, device=x.device, dtype=x.dtype)
        name = type(self).__name__
        names = ", ".join(self.state_names)
        if not isinstance(state, tuple) or len(state) != self.num_states:
            got = f"a tuple of {len(state)}" if isinstance(state, tuple) else type(state).__name__
            raise ValueError(f"{name} expects its state as a tuple ({names}), got {got}")
        expected = [batch_size, self.hidden_size]
        for state_name, tensor in zip(self.state_names, state, strict=True):
            if not isinstance(tensor, Tensor) or list(tensor.shape) != expected:
                got = list(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
                raise ValueError(
                    f"{name} expects state {state_name} of shape [B={batch_size}, H={self.hidden_size}], "
                    f"got {got}"
                )
        return state

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, hidden_size={self.hidden_size}"

    # Conversion helpers for the subclasses that match a torch module (nn.RNN, nn.LSTM).

    def _copy_into_torch(self, module: nn.RNNBase) -> nn.RNNBase:
        """Copy our weights into a fresh single-layer torch module; torch's second bias gets zeros."""
        with torch.no_grad():
            module.weight_ih_l0.copy_(self.weight_ax)
            module.weight_hh_l0.copy_(self.weight_aa)
            module.bias_ih_l0.copy_(self.bias)
            module.bias_hh_l0.zero_()
        return module

    @staticmethod
    def _check_convertible(module: nn.RNNBase, expected_type: type[nn.RNNBase], layer_name: str) -> None:
        """Refuse torch modules whose computation one of our layers cannot reproduce."""
        if not isinstance(module, expected_type):
            raise ValueError(
                f"{layer_name}.from_torch expects an nn.{expected_type.__name__}, got {type(module).__name__}"
            )
        problems = []
        if module.num_layers != 1:
            problems.append(f"num_layers={module.num_layers} (need 1; build one layer per torch layer)")
        if module.bidirectional:
            problems.append("bidirectional=True (need False)")
        if getattr(module, "proj_size", 0):
            problems.append(f"proj_size={module.proj_size} (need 0)")
        if problems:
            raise ValueError(f"{layer_name}.from_torch cannot convert this module: " + "; ".join(problems))

    def _load_from_torch(self, module: nn.RNNBase) -> None:
        """Copy a checked torch module's weights into ours; its two biases b_ih + b_hh sum into ``bias``."""
        with torch.no_grad():
            self.weight_ax.copy_(module.weight_ih_l0)
            self.weight_aa.copy_(module.weight_hh_l0)
            if module.bias:
                self.bias.copy_(module.bias_ih_l0 + module.bias_hh_l0)
            else:
                self.bias.zero_()
