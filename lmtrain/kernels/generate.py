"""The generation kernels of ``generate.c`` as Python calls on tensors.

``generation_kernels()`` is the process's ``GenerationKernels`` (built on first use, see ``compiler``), or
None where the kernels are off or unavailable. They serve a few streams at a time (``FEW_STREAMS``): one
token's products read each weight once, and these kernels read it faster than torch's batch-1 products
and with one call per layer. With more streams the products are real matrix products, and torch's are
faster; the callers switch at ``FEW_STREAMS``. ``draw`` is the last step of sampling a token, for any
number of streams: eight torch calls in ``lmtrain.sampling.draw``, one here, with the same result.
"""

from __future__ import annotations

import ctypes
import functools

import torch
from torch import Tensor

from lmtrain.kernels.compiler import kernel_library

FEW_STREAMS = 16
"""The most streams the generation kernels serve; more go to torch's products. On the README's machine
(2-layer LSTM, H = 512) the kernels generated 1.3x torch's tokens/s at 8 streams, 1.0-1.1x at 16 and
0.9x at 32."""


def _pointer(tensor: Tensor | None) -> int | None:
    if tensor is None:
        return None
    if not tensor.is_contiguous():
        raise ValueError("the generation kernels need contiguous tensors")
    return tensor.data_ptr()


class GenerationKernels:
    """An LSTM layer's step and a linear layer, for a few streams (rows), on fp32 CPU tensors."""

    def __init__(self, library: ctypes.CDLL):
        size, pointer = ctypes.c_int64, ctypes.c_void_p
        self._lstm_step = library.lstm_generate_step
        self._lstm_step.argtypes = [size, size, size, pointer, size, *[pointer] * 7]
        self._lstm_step.restype = None
        self._linear = library.linear_few_rows
        self._linear.argtypes = [size, size, size, *[pointer] * 4]
        self._linear.restype = None
        self._draw = library.draw_tokens
        self._draw.argtypes = [size, size, *[pointer] * 3]
        self._draw.restype = None

    def lstm_step(
        self,
        input_rows: Tensor,
        weight_ax: Tensor | None,
        x: Tensor | None,
        weight_aa: Tensor,
        a_prev: Tensor,
        c_prev: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """``a<t>, C<t>`` ``[B, H]`` from ``z = input_rows + x W_ax^T + a_prev W_aa^T``.

        ``input_rows`` is ``[B, 4H]`` (a folded embedding's rows) or ``[4H]`` (the bias, shared by every
        stream); ``weight_ax`` and ``x`` are both None when the input half is already in ``input_rows``."""
        batch, hidden = a_prev.shape
        input_size = 0 if x is None else x.shape[1]
        stride = 0 if input_rows.dim() == 1 else input_rows.shape[1]
        a, c = a_prev.new_empty(batch, hidden), c_prev.new_empty(batch, hidden)
        self._lstm_step(
            batch,
            hidden,
            input_size,
            _pointer(input_rows),
            stride,
            *map(_pointer, (weight_ax, x, weight_aa, a_prev, c_prev, a, c)),
        )
        return a, c

    def linear(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """``x W^T + bias``: ``x`` ``[B, K]``, ``weight`` ``[N, K]``, ``bias`` ``[N]`` or None; ``[B, N]``."""
        batch, in_features = x.shape
        out_features = weight.shape[0]
        out = x.new_empty(batch, out_features)
        self._linear(batch, in_features, out_features, *map(_pointer, (x, weight, bias, out)))
        return out

    def draw(self, probs: Tensor, uniforms: Tensor) -> Tensor:
        """The token ``[M]`` (int64) of each row of ``probs`` ``[M, V]`` (fp32) that ``lmtrain.sampling.draw``
        picks for the uniform numbers ``uniforms`` ``[M, 1]`` (float64): the same token, bit for bit."""
        streams, vocab = probs.shape
        tokens = torch.empty(streams, dtype=torch.int64)
        self._draw(streams, vocab, *map(_pointer, (probs, uniforms, tokens)))
        return tokens


@functools.cache
def generation_kernels() -> GenerationKernels | None:
    """The kernels of the process's library (``compiler.kernel_library``); None when off or unavailable."""
    library = kernel_library()
    return None if library is None else GenerationKernels(library)
