"""The generation kernels of ``generate.c`` as Python calls on tensors.

``generation_kernels()`` is the process's ``GenerationKernels`` (built on first use, see ``compiler``), or
None where the kernels are off or unavailable. They serve a few streams at a time (``FEW_STREAMS``): one
token's products read each weight once, and these kernels read it faster than torch's batch-1 products
and with one call per layer. With more streams the products are real matrix products, and torch's are
faster; the callers switch at ``FEW_STREAMS``. ``draw`` is the last step of sampling a token, for any
number of streams: eight torch calls in ``lmtrain.generation.sampling.draw``, one here, with the same result;
``sampler`` is the whole choice of a token (temperature, softmax, draw) in one call.

Every step and the linear layer can also be bound to fixed tensors (``bind``), which returns a call
without arguments: ``lmtrain.fast.token_loop`` runs a whole token as a few such calls on buffers made once.

The kernels read weights packed once, when a step is made, into blocks of 64 output rows
(``GenerationKernels.pack``; ``generate.c`` says why). Weights whose every value is a bfloat16 number (a
model rounded by ``lmtrain sample --weights bf16``) are packed as bfloat16: the same numbers in half the
bytes, and the arithmetic fp32 either way, so the result does not change and a step reads half as much.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable

import torch
from torch import Tensor

from lmtrain.fast.kernels import ADDRESS, SIZE, c_function, pointer
from lmtrain.fast.kernels.compiler import kernel_library

FEW_STREAMS = 24
"""The most streams the generation kernels serve; more go to torch's products. Reading each weight once per
token pays while the streams are few; from about 32 streams torch's batched products are as fast
(``scripts/bench_generate.py --batch-sizes``)."""

BLOCK_ROWS = 64
"""Output rows per packed block: ``BLOCK_ROWS`` in ``generate.c``."""

LSTM_GATES = 4
"""The row groups of an LSTM weight (u, f, C̃, o), packed side by side: 16 units' gate rows per block."""


class PackedLayerStep:
    """What the cells' generation steps share: ``W_ax`` and ``W_aa`` packed once (a subclass's ``_pack`` gives
    a weight's packed pieces, its ``_c_function`` the C step), the input rows (the bias, or with ``table`` the
    embedding folded into the input projection, ``[V, G*H]``: ``b + W_ax e`` for every token, and the inputs
    are then token ids ``[B]``, int64, instead of ``x<t>`` ``[B, E]``), and the C call. Every step's C
    function takes ``(B, H, E, input rows, token ids, V, W_ax's pieces, x, W_aa's pieces, bf16, *extra,
    *buffers)``, the buffers being the previous state, the scratch (``scratch_width`` x H floats a stream, if
    any) and the new state, each ``[B, H]``. The step holds the packed tensors, so their addresses stay valid.

    ``step(inputs, *state) -> new state`` (a tuple, its first tensor the layer's output) makes new tensors
    for each token; ``step.bind(inputs, state, new_state)`` returns a call without arguments that computes
    the step from these very tensors, for a loop that reuses its buffers (``lmtrain.fast.token_loop``)."""

    scratch_width = 0

    def __init__(
        self,
        kernels: GenerationKernels,
        weight_aa: Tensor,
        bias: Tensor | None = None,
        weight_ax: Tensor | None = None,
        table: Tensor | None = None,
        extra: tuple = (),
    ):
        self._function = self._c_function(kernels)
        self.hidden = weight_aa.shape[1]
        self.table_rows = 0 if table is None else table.shape[0]
        self.input_size = 0 if weight_ax is None else weight_ax.shape[1]
        self.weights_bf16 = kernels.holds_bfloat16(weight_aa, weight_ax)
        recurrent = self._pack(kernels, weight_aa, self.weights_bf16)
        inputs = (
            [None] * len(recurrent)
            if weight_ax is None
            else self._pack(kernels, weight_ax, self.weights_bf16)
        )
        input_rows = table if table is not None else bias
        self._tensors = (*recurrent, *inputs, input_rows)  # kept alive for the addresses below
        self._input_rows = pointer(input_rows)
        self._input_weights = [pointer(t) for t in inputs]
        self._recurrent_weights = [pointer(t) for t in recurrent]
        self._extra = extra

    def _c_function(self, kernels: GenerationKernels) -> ctypes._CFuncPtr:
        """The cell's C step function."""
        raise NotImplementedError

    def _pack(self, kernels: GenerationKernels, weight: Tensor, bf16: bool) -> list[Tensor]:
        """``weight`` (``W_ax`` or ``W_aa``) as the packed pieces the C step reads (``kernels.pack``)."""
        raise NotImplementedError

    def __call__(self, inputs: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        new_state = tuple(torch.empty_like(tensor) for tensor in state)
        arguments, _ = self._arguments(inputs, state, new_state)
        self._check(self._function(*arguments))
        return new_state

    def bind(
        self, inputs: Tensor, state: tuple[Tensor, ...], new_state: tuple[Tensor, ...]
    ) -> Callable[[], None]:
        """The step from ``inputs`` and ``state`` into ``new_state``, as a call without arguments: the C
        function reads the tensors' values at each call. Every tensor must be contiguous; the call keeps
        them, and this step's packed weights, alive."""
        arguments, kept = self._arguments(inputs, state, new_state)
        return _bound_call(self._function, arguments, (self, *kept), self._check)

    def _arguments(
        self, inputs: Tensor, state: tuple[Tensor, ...], new_state: tuple[Tensor, ...]
    ) -> tuple[tuple, tuple[Tensor | None, ...]]:
        """The C call's arguments, and the tensors whose addresses they hold (contiguous copies, scratch)."""
        tokens, x = _inputs(inputs, self.table_rows)
        batch = state[0].shape[0]
        scratch = (state[0].new_empty(batch, self.scratch_width * self.hidden),) if self.scratch_width else ()
        buffers = (*state, *scratch, *new_state)
        arguments = (
            batch,
            self.hidden,
            self.input_size,
            self._input_rows,
            pointer(tokens),
            self.table_rows,
            *self._input_weights,
            pointer(x),
            *self._recurrent_weights,
            self.weights_bf16,
            *self._extra,
            *map(pointer, buffers),
        )
        return arguments, (tokens, x, *buffers)

    def _check(self, status: int) -> None:
        if status != 0:
            raise IndexError(f"a token id is outside the vocabulary [0, {self.table_rows})")


class LSTMLayerStep(PackedLayerStep):
    """One LSTM layer's generation step, ``step(inputs, a_prev, c_prev) -> (a<t>, C<t>)``; the weights in
    LSTM blocks (16 units' four gate rows each)."""

    def _c_function(self, kernels: GenerationKernels) -> ctypes._CFuncPtr:
        return kernels._lstm_step

    def _pack(self, kernels: GenerationKernels, weight: Tensor, bf16: bool) -> list[Tensor]:
        return [kernels.pack(weight, LSTM_GATES, bf16)]


class GRULayerStep(PackedLayerStep):
    """One GRU layer's generation step (either variant: the notes', or cuDNN's with ``candidate_bias``, its
    ``b_ca``), ``step(inputs, c_prev) -> (c<t>,)``; each weight in two pieces: the gates' rows (u, r) in
    blocks of 32 units, the candidate's in blocks of 64. Its scratch holds Γ_u and Γ_r's part."""

    scratch_width = 2

    def __init__(
        self,
        kernels: GenerationKernels,
        weight_aa: Tensor,
        bias: Tensor | None = None,
        weight_ax: Tensor | None = None,
        table: Tensor | None = None,
        candidate_bias: Tensor | None = None,
    ):
        self._candidate_bias = candidate_bias  # kept alive for its address
        super().__init__(kernels, weight_aa, bias, weight_ax, table, (pointer(candidate_bias),))

    def _c_function(self, kernels: GenerationKernels) -> ctypes._CFuncPtr:
        return kernels._gru_step

    def _pack(self, kernels: GenerationKernels, weight: Tensor, bf16: bool) -> list[Tensor]:
        gates, candidate = weight.split([2 * self.hidden, self.hidden])  # [2H, K], [H, K]
        return [kernels.pack(gates, 2, bf16), kernels.pack(candidate, 1, bf16)]


class RNNLayerStep(PackedLayerStep):
    """One plain RNN layer's generation step, ``step(inputs, a_prev) -> (a<t>,)`` with
    ``a<t> = g(input row + W_ax x + W_aa a_prev)``, g tanh or (``relu``) relu; the weights in blocks of 64
    units."""

    def __init__(
        self,
        kernels: GenerationKernels,
        weight_aa: Tensor,
        relu: bool,
        bias: Tensor | None = None,
        weight_ax: Tensor | None = None,
        table: Tensor | None = None,
    ):
        super().__init__(kernels, weight_aa, bias, weight_ax, table, (int(relu),))

    def _c_function(self, kernels: GenerationKernels) -> ctypes._CFuncPtr:
        return kernels._rnn_step

    def _pack(self, kernels: GenerationKernels, weight: Tensor, bf16: bool) -> list[Tensor]:
        return [kernels.pack(weight, 1, bf16)]


class PackedLinear:
    """``x -> x W^T + bias`` for a few rows ``x`` ``[B, K]``: ``weight`` ``[N, K]`` packed once in blocks of
    64 rows, ``bias`` ``[N]`` (contiguous) or None. ``linear.bind(x, out)`` returns a call without arguments
    that writes ``x W^T + bias`` into ``out``, as ``PackedLayerStep.bind``."""

    def __init__(self, kernels: GenerationKernels, weight: Tensor, bias: Tensor | None):
        self.out_features, self.in_features = weight.shape
        self.weights_bf16 = kernels.holds_bfloat16(weight)
        self._weight = kernels.pack(weight, 1, self.weights_bf16)
        self._bias = bias  # kept alive for its address
        self._function = kernels._linear

    def __call__(self, x: Tensor) -> Tensor:
        out = x.new_empty(x.shape[0], self.out_features)
        self.bind(x, out)()
        return out

    def bind(self, x: Tensor, out: Tensor) -> Callable[[], None]:
        arguments = (
            x.shape[0],
            self.in_features,
            self.out_features,
            pointer(x),
            pointer(self._weight),
            self.weights_bf16,
            pointer(self._bias),
            pointer(out),
        )
        return _bound_call(self._function, arguments, (self, x, out))


def _bound_call(
    function: ctypes._CFuncPtr,
    arguments: tuple,
    keeps_alive: tuple,
    check: Callable[[int], None] | None = None,
) -> Callable[[], None]:
    """``function(*arguments)`` as a call without arguments, for a loop that calls it on the same tensors
    again and again; it holds ``keeps_alive``, the objects that own the memory whose addresses
    ``arguments`` hold, and passes the C result to ``check`` where given."""
    if check is None:

        def call() -> None:
            function(*arguments)

    else:

        def call() -> None:
            check(function(*arguments))

    call.keeps_alive = keeps_alive
    return call


def _inputs(inputs: Tensor, table_rows: int) -> tuple[Tensor | None, Tensor | None]:
    """(token ids, None) for a folded layer (``table_rows`` > 0), refused unless int64 (the C code reads
    them as such); (None, contiguous ``x<t>``) otherwise."""
    if not table_rows:
        return None, inputs.contiguous()
    if inputs.dtype != torch.int64:
        raise ValueError(f"token ids must be int64, got {inputs.dtype}")
    return inputs.contiguous(), None


class GenerationKernels:
    """The steps of LSTM, GRU and plain RNN layers and of a linear layer, for a few streams (rows), and the
    sampling draw, on fp32 CPU tensors."""

    def __init__(self, library: ctypes.CDLL):
        flag = ctypes.c_int
        lstm_arguments = [SIZE, SIZE, SIZE, ADDRESS, ADDRESS, SIZE, *[ADDRESS] * 3, flag, *[ADDRESS] * 4]
        self._lstm_step = c_function(library, "lstm_generate_step", lstm_arguments, result=ctypes.c_int)
        linear_arguments = [SIZE, SIZE, SIZE, ADDRESS, ADDRESS, flag, ADDRESS, ADDRESS]
        self._linear = c_function(library, "linear_few_rows", linear_arguments)
        gru_arguments = [SIZE, SIZE, SIZE, ADDRESS, ADDRESS, SIZE, *[ADDRESS] * 5, flag, *[ADDRESS] * 4]
        self._gru_step = c_function(library, "gru_generate_step", gru_arguments, result=ctypes.c_int)
        rnn_arguments = [
            SIZE,
            SIZE,
            SIZE,
            ADDRESS,
            ADDRESS,
            SIZE,
            *[ADDRESS] * 3,
            flag,
            flag,
            ADDRESS,
            ADDRESS,
        ]
        self._rnn_step = c_function(library, "rnn_generate_step", rnn_arguments, result=ctypes.c_int)
        self._draw = c_function(library, "draw_tokens", [SIZE, SIZE, *[ADDRESS] * 3])
        sample_arguments = [SIZE, SIZE, ADDRESS, ctypes.c_float, SIZE, flag, *[ADDRESS] * 3]
        self._sample = c_function(library, "sample_tokens", sample_arguments)
        self._pack = c_function(library, "pack_generation_weight", [SIZE, SIZE, SIZE, ADDRESS, flag, ADDRESS])
        self._holds_bfloat16 = c_function(library, "holds_bfloat16", [SIZE, ADDRESS], result=ctypes.c_int)

    def holds_bfloat16(self, *weights: Tensor | None) -> bool:
        """Whether every value of every weight (None aside) is exactly a bfloat16 number: such weights are
        packed as bfloat16, the same numbers in half the bytes."""
        present = [w.contiguous() for w in weights if w is not None]
        return all(self._holds_bfloat16(w.numel(), pointer(w)) for w in present)

    def pack(self, weight: Tensor, groups: int, bf16: bool) -> Tensor:
        """``weight`` ``[N, K]`` packed in blocks of 64 rows, ``[ceil(N / 64), K, 64]``, fp32 or (``bf16``,
        for weights that hold bfloat16 numbers) bfloat16: ``pack_generation_weight`` in ``generate.c`` says
        how, with ``groups`` 4 for an LSTM weight (each block holds 16 units' four gate rows) and 1 for a
        linear layer (64 consecutive rows)."""
        weight = weight.contiguous()
        rows, k_count = weight.shape
        blocks = -(-rows // BLOCK_ROWS)  # ceil: a group of rows / groups rows fills blocks of 64 / groups
        dtype = torch.bfloat16 if bf16 else torch.float32
        packed = torch.empty(blocks, k_count, BLOCK_ROWS, dtype=dtype)
        self._pack(rows, k_count, groups, pointer(weight), int(bf16), pointer(packed))
        return packed

    def lstm_layer(
        self,
        weight_aa: Tensor,
        bias: Tensor | None = None,
        weight_ax: Tensor | None = None,
        table: Tensor | None = None,
    ) -> LSTMLayerStep:
        """The step of an LSTM layer with these weights: ``bias`` and ``weight_ax``, or the folded ``table``
        (see ``LSTMLayerStep``). The weights are packed once (``pack``); ``bias`` and ``table`` must be
        contiguous and stay unchanged while the step is used."""
        return LSTMLayerStep(self, weight_aa, bias, weight_ax, table)

    def gru_layer(
        self,
        weight_aa: Tensor,
        bias: Tensor | None = None,
        weight_ax: Tensor | None = None,
        table: Tensor | None = None,
        candidate_bias: Tensor | None = None,
    ) -> GRULayerStep:
        """The step of a GRU layer (``GRULayerStep``): the notes' variant, or cuDNN's with
        ``candidate_bias``; the other arguments as for ``lstm_layer``."""
        return GRULayerStep(self, weight_aa, bias, weight_ax, table, candidate_bias)

    def rnn_layer(
        self,
        weight_aa: Tensor,
        relu: bool,
        bias: Tensor | None = None,
        weight_ax: Tensor | None = None,
        table: Tensor | None = None,
    ) -> RNNLayerStep:
        """The step of a plain RNN layer (``RNNLayerStep``), tanh or ``relu``; the other arguments as for
        ``lstm_layer``."""
        return RNNLayerStep(self, weight_aa, relu, bias, weight_ax, table)

    def linear_layer(self, weight: Tensor, bias: Tensor | None) -> PackedLinear:
        """``x -> x W^T + bias`` for ``x`` ``[B, K]`` (``PackedLinear``): ``weight`` ``[N, K]``, packed once
        (``pack``), ``bias`` ``[N]`` (contiguous) or None."""
        return PackedLinear(self, weight, bias)

    def draw(self, probs: Tensor, uniforms: Tensor) -> Tensor:
        """The token ``[M]`` (int64) of each row of ``probs`` ``[M, V]`` (fp32) that ``sampling.draw``
        picks for the uniform numbers ``uniforms`` ``[M, 1]`` (float64): the same token, bit for bit."""
        streams, vocab = probs.shape
        tokens = torch.empty(streams, dtype=torch.int64)
        self._draw(streams, vocab, *map(pointer, (probs, uniforms, tokens)))
        return tokens

    def sampler(
        self,
        logits: Tensor,
        tokens: Tensor,
        uniforms: Tensor,
        temperature: float = 1.0,
        greedy: bool = False,
        banned: int | None = None,
    ) -> Callable[[], None]:
        """A call without arguments that writes into ``tokens`` ``[M]`` (int64) the next token of each row of
        ``logits`` ``[M, V]`` (fp32), as ``sampling.next_tokens`` picks it without top-k or top-p
        (``sample_tokens`` in ``generate.c``: the same token unless a uniform number falls within float
        rounding of a boundary), drawing with ``uniforms`` ``[M, 1]`` (float64; unread when ``greedy``)."""
        streams, vocab = logits.shape
        weights = logits.new_empty(vocab)  # the C function's scratch
        arguments = (
            streams,
            vocab,
            pointer(logits),
            temperature,
            -1 if banned is None else banned,
            int(greedy),
            pointer(uniforms),
            pointer(weights),
            pointer(tokens),
        )
        return _bound_call(self._sample, arguments, (logits, tokens, uniforms, weights))


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
