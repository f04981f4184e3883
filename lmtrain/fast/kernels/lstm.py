"""The LSTM step kernels of ``lstm_step.c`` as Python calls on tensors.

``lstm_step_kernels()`` is the process's ``LSTMStepKernels`` (built on first use, see ``compiler``), or
None where the kernels are off or unavailable. A window uses them where ``kernels.fused_applies``:
fp32 tensors on the CPU (float64 checks, bf16 autocast and CUDA keep the torch path). The calls take tensors,
check that they are contiguous (the window has checked dtype and device), and pass raw pointers; each call
costs about 2 µs.
"""

from __future__ import annotations

import ctypes
import functools

from torch import Tensor

from lmtrain.fast.kernels import ADDRESS, SIZE, c_function, pointer
from lmtrain.fast.kernels.compiler import kernel_library


class LSTMStepKernels:
    """``forward`` and ``backward`` of one LSTM step's gate arithmetic on ``[B, 4H]`` gates (u, f, C̃, o)."""

    def __init__(self, library: ctypes.CDLL):
        self._forward = c_function(library, "lstm_forward_step", [SIZE, SIZE, *[ADDRESS] * 5])
        self._backward = c_function(library, "lstm_backward_step", [SIZE, SIZE, *[ADDRESS] * 7])

    def forward(self, product: Tensor, gates: Tensor, c_prev: Tensor, c: Tensor, a: Tensor) -> None:
        """``product`` ``[B, 4H]`` = a<t-1> W_aa^T and ``gates`` ``[B, 4H]`` = W_ax x<t> + b in, so that
        z<t> = product + gates; ``gates`` is overwritten with (Γ_u, Γ_f, C̃, Γ_o), and ``c`` = C<t> and
        ``a`` = a<t> ``[B, H]`` are written. ``c_prev`` is C<t-1>."""
        batch, hidden = c.shape
        self._forward(batch, hidden, *map(pointer, (product, gates, c_prev, c, a)))

    def backward(
        self, gates: Tensor, c_prev: Tensor, c: Tensor, recurrent: Tensor, dy: Tensor, dc: Tensor, dz: Tensor
    ) -> None:
        """Step t's ``gates``, C<t-1> and C<t> in, and dL/da<t> as two parts, ``recurrent`` = dz<t+1> W_aa
        and ``dy`` = dL/dy<t>; ``dc`` holds dL/dC<t> from step t + 1 and is overwritten with dL/dC<t-1>;
        ``dz`` ``[B, 4H]`` receives dL/dz<t>."""
        batch, hidden = c.shape
        self._backward(batch, hidden, *map(pointer, (gates, c_prev, c, recurrent, dy, dc, dz)))


@functools.cache
def lstm_step_kernels() -> LSTMStepKernels | None:
    """The kernels of the process's library (``compiler.kernel_library``); None when off or unavailable."""
    library = kernel_library()
    return None if library is None else LSTMStepKernels(library)
