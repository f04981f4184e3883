"""The notes' GRU step kernels of ``gru_step.c`` as Python calls on tensors.

``gru_step_kernels()`` is the process's ``GRUStepKernels`` (built on first use, see ``compiler``), or None
where the kernels are off or unavailable; a window uses them where ``lmtrain.fast.kernels.fused_applies``. The
calls check that the tensors are contiguous and pass raw pointers.
"""

from __future__ import annotations

import ctypes
import functools

from torch import Tensor

from lmtrain.fast.kernels import ADDRESS, SIZE, c_function, pointer
from lmtrain.fast.kernels.compiler import kernel_library


class GRUStepKernels:
    """The two forward passes and the two backward passes of a step, on ``[B, 3H]`` gates (u, r, c̃)."""

    def __init__(self, library: ctypes.CDLL):
        self._functions = {
            name: c_function(library, name, [SIZE, SIZE, *[ADDRESS] * tensors])
            for name, tensors in (
                ("gru_forward_gates", 4),
                ("gru_forward_state", 4),
                ("gru_backward_candidate", 3),
                ("gru_backward_gates", 7),
            )
        }

    def _call(self, name: str, hidden_like: Tensor, *tensors: Tensor) -> None:
        batch, hidden = hidden_like.shape
        self._functions[name](batch, hidden, *map(pointer, tensors))

    def forward_gates(self, product: Tensor, gates: Tensor, c_prev: Tensor, reset_state: Tensor) -> None:
        """``product`` ``[B, 2H]`` = c<t-1> [W_u; W_r]^T; Γ_u, Γ_r written over the input halves in ``gates``,
        and ``reset_state`` = r<t> = Γ_r c<t-1>."""
        self._call("gru_forward_gates", c_prev, product, gates, c_prev, reset_state)

    def forward_state(self, product: Tensor, gates: Tensor, c_prev: Tensor, c: Tensor) -> None:
        """``product`` ``[B, H]`` = r<t> W_c^T; c̃ written over its input half in ``gates``; ``c`` = c<t>."""
        self._call("gru_forward_state", c_prev, product, gates, c_prev, c)

    def backward_candidate(self, gates: Tensor, dc: Tensor, dz: Tensor) -> None:
        """dz_c̃ = dc Γ_u (1 - c̃²) into the c̃ block of ``dz`` ``[B, 3H]``."""
        self._call("gru_backward_candidate", dc, gates, dc, dz)

    def backward_gates(
        self, gates: Tensor, c_prev: Tensor, dc: Tensor, dr: Tensor, dy_prev: Tensor, dz: Tensor, rest: Tensor
    ) -> None:
        """dz_u and dz_r into ``dz``; ``rest`` = dc (1 - Γ_u) + dr Γ_r + dy<t-1>, the part of dc<t-1> that
        does not come through [W_u; W_r]."""
        self._call("gru_backward_gates", dc, gates, c_prev, dc, dr, dy_prev, dz, rest)


@functools.cache
def gru_step_kernels() -> GRUStepKernels | None:
    """The kernels of the process's library (``compiler.kernel_library``); None when off or unavailable."""
    library = kernel_library()
    return None if library is None else GRUStepKernels(library)
