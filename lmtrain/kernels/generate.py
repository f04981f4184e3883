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
from collections.abc import Callable

import torch
from torch import Tensor

from lmtrain.kernels import ADDRESS, SIZE, c_function, pointer
from lmtrain.kernels.compiler import kernel_library

FEW_STREAMS = 16
"""The most streams the generation kernels serve; more go to torch's products. On the README's machine
(2-layer LSTM, H = 512) the kernels generated 1.3x torch's tokens/s at 8 streams, 1.0-1.1x at 16 and
0.9x at 32."""


class LSTMLayerStep:
    """One LSTM layer's generation step on weights fixed when it is made (their pointers are taken once;
    the step holds the tensors, so they stay alive). ``step(inputs, a_prev, c_prev) -> (a<t>, C<t>)``.

    With ``table`` (``[V, 4H]``, the embedding folded into the input projection: ``b + W_ax e`` for every
    token), ``inputs`` are token ids ``[B]`` (int64); otherwise ``inputs`` is ``x<t>`` ``[B, E]`` and the step
    computes ``b + W_ax x<t>`` itself."""

    def __init__(
        self,
        function: ctypes._CFuncPtr,
        weight_aa: Tensor,
        bias: Tensor | None = None,
        weight_ax: Tensor | None = None,
        table: Tensor | None = None,
    ):
        self._function = function
        self._tensors = (weight_aa, bias, weight_ax, table)  # kept alive for the pointers below
        self.hidden = weight_aa.shape[1]
        self.table_rows = 0 if table is None else table.shape[0]
        self.input_size = 0 if weight_ax is None else weight_ax.shape[1]
        self._input_rows = pointer(table if table is not None else bias)
        self._weight_ax, self._weight_aa = pointer(weight_ax), pointer(weight_aa)

    def __call__(self, inputs: Tensor, a_prev: Tensor, c_prev: Tensor) -> tuple[Tensor, Tensor]:
        batch = a_prev.shape[0]
        a, c = a_prev.new_empty(batch, self.hidden), c_prev.new_empty(batch, self.hidden)
        tokens, x = (inputs, None) if self.table_rows else (None, inputs.contiguous())
        if tokens is not None and tokens.dtype != torch.int64:
            raise ValueError(f"token ids must be int64, got {tokens.dtype}")
        status = self._function(
            batch,
            self.hidden,
            self.input_size,
            self._input_rows,
            pointer(tokens),
            self.table_rows,
            self._weight_ax,
            pointer(x),
            self._weight_aa,
            *map(pointer, (a_prev, c_prev, a, c)),
        )
        if status != 0:
            raise IndexError(f"a token id is outside the vocabulary [0, {self.table_rows})")
        return a, c


class GenerationKernels:
    """An LSTM layer's step and a linear layer, for a few streams (rows), and the sampling draw, on fp32
    CPU tensors."""

    def __init__(self, library: ctypes.CDLL):
        lstm_arguments = [SIZE, SIZE, SIZE, ADDRESS, ADDRESS, SIZE, *[ADDRESS] * 7]
        self._lstm_step = c_function(library, "lstm_generate_step", lstm_arguments, result=ctypes.c_int)
        self._linear = c_function(library, "linear_few_rows", [SIZE, SIZE, SIZE, *[ADDRESS] * 4])
        self._draw = c_function(library, "draw_tokens", [SIZE, SIZE, *[ADDRESS] * 3])

    def lstm_layer(
        self,
        weight_aa: Tensor,
        bias: Tensor | None = None,
        weight_ax: Tensor | None = None,
        table: Tensor | None = None,
    ) -> LSTMLayerStep:
        """The step of an LSTM layer with these weights: ``bias`` and ``weight_ax``, or the folded ``table``
        (see ``LSTMLayerStep``). The tensors must be contiguous and stay unchanged while it is used."""
        return LSTMLayerStep(self._lstm_step, weight_aa, bias, weight_ax, table)

    def linear_layer(self, weight: Tensor, bias: Tensor | None) -> Callable[[Tensor], Tensor]:
        """``x -> x W^T + bias`` for ``x`` ``[B, K]``: ``weight`` ``[N, K]`` (contiguous), ``bias`` ``[N]`` or
        None; the weights' pointers taken once."""
        out_features, in_features = weight.shape
        weight_address, bias_address = pointer(weight), pointer(bias)
        function = self._linear

        def linear(x: Tensor) -> Tensor:
            out = x.new_empty(x.shape[0], out_features)
            function(
                x.shape[0],
                in_features,
                out_features,
                pointer(x),
                weight_address,
                bias_address,
                pointer(out),
            )
            return out

        linear.tensors = (weight, bias)  # kept alive for the pointers above
        return linear

    def draw(self, probs: Tensor, uniforms: Tensor) -> Tensor:
        """The token ``[M]`` (int64) of each row of ``probs`` ``[M, V]`` (fp32) that ``lmtrain.sampling.draw``
        picks for the uniform numbers ``uniforms`` ``[M, 1]`` (float64): the same token, bit for bit."""
        streams, vocab = probs.shape
        tokens = torch.empty(streams, dtype=torch.int64)
        self._draw(streams, vocab, *map(pointer, (probs, uniforms, tokens)))
        return tokens


def by_stream_count(few_streams: Callable, make_many_streams: Callable[[], Callable]) -> Callable:
    """A function that calls ``few_streams`` for up to ``FEW_STREAMS`` streams (the rows of its first
    argument), and for more the function ``make_many_streams()`` returns, made on first use."""
    many_streams = functools.cache(make_many_streams)

    def call(x: Tensor, *rest):
        return few_streams(x, *rest) if x.shape[0] <= FEW_STREAMS else many_streams()(x, *rest)

    return call


@functools.cache
def generation_kernels() -> GenerationKernels | None:
    """The kernels of the process's library (``compiler.kernel_library``); None when off or unavailable."""
    library = kernel_library()
    return None if library is None else GenerationKernels(library)
