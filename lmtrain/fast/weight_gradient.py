"""The two products of a linear map's backward over many rows: ``dW = dz^T x`` and ``dx = dz W``.

After a hand-written backward through time has every step's ``dz`` (``[N, G]`` for the N = T*B tokens of
a window), each weight's gradient is one product ``dz^T x`` (``[G, N] x [N, K]``) and the inputs' gradient
one product ``dz W`` (``[N, G] x [G, K]``). MKL runs them at different speeds depending on whether rows are
whole cache lines. Measured on the README's CPU, interleaved:

- ``weight_gradient``, N = 1,280-4,096 tokens: with K and G multiples of 16 floats (H = 128 ... 1024),
  ``dz^T x`` directly, 1.1-1.25x faster, and with multiples of 8 (H = 200, 328, 600, 1,000; session 9,
  N = 400-2,240) 1.04-1.22x faster. Where K is not a multiple of 8 (H = E = 650, the word-level
  model), session 10 found ``dz^T x`` on a copy of x padded with zero columns to a multiple of 16 floats
  (as for ``input_gradient`` below), then copied out to ``[G, K]``, 1.04-1.29x faster than the
  ``(x^T dz)^T`` that sessions 5-9 took there (for the LSTM's G = 4H at K = 300-1,500, N = 700-4,096:
  1.20x at the word model's K = 650, N = 700) and 1.03-1.43x for the GRU's G = 3H. ``(x^T dz)^T``, copied
  back to ``[G, K]`` by the tiled transpose of ``lmtrain.fast.kernels.layout``, stays for the rest (such as
  K = 100, where padding adds 12% columns: 0.89-0.92x).
- ``input_gradient``: where K is not a multiple of 8 floats, MKL writes the ``[N, K]`` result slowly
  (101-114 GFLOP/s at N = 4,096 for K = 650, 700, 1,500, against 147-163 for K = 200, 400, 1,000). A
  copy of ``W`` padded with zero columns to a multiple of 16 (``[G, 656]`` for K = 650) runs 1.2-1.34x
  faster for those K at N = 2,240-4,096 (1.05-1.14x at K = 300, 500), the padding and the copy out
  included. At N = 700 the gain was within noise (0.96-1.13x), and for K = 100 the 12% more columns cost
  more than they saved (0.89-0.98x).
- Since session 10 ``input_gradient`` runs on oneDNN instead where that is faster still
  (``lmtrain.fast.onednn_linear``: 1.03-1.80x MKL's from 2^27 multiply-adds, session 11); the padding
  serves the products it leaves to MKL (other CPUs, small products).
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor

from lmtrain.fast.kernels import fused_applies
from lmtrain.fast.kernels.layout import contiguous
from lmtrain.fast.onednn_linear import input_gradient_on_onednn, linear_on_onednn

CACHE_LINE_FLOATS = 16

VECTOR_FLOATS = 8
"""Rows of a multiple of this many floats (whole AVX2 vectors) take ``dz^T x`` directly."""

PAD_MIN_ROWS = 1024
"""``input_gradient`` multiplies fewer rows than this by the weight as it is."""

PAD_MAX_GROWTH = 1.025
"""Both products pad only where that adds at most 2.5% columns (K of about 300 or more)."""


def weight_gradient(*parts: tuple[Tensor, Tensor]) -> Tensor:
    """``sum of dz^T x`` over the ``(x [N_i, K], dz [N_i, G])`` parts: the ``[G, K]`` gradient of a weight
    ``W [G, K]`` that maps each row of x to a row of the pre-activations z (several parts when the rows
    come from different tensors, such as the initial state and the outputs of later steps)."""
    in_features, out_features = parts[0][0].shape[1], parts[0][1].shape[1]
    if fused_applies(*(t for part in parts for t in part)) and padding_pays(in_features):
        wide = padded_width(in_features)
        total = _sum_of_products((dz.t(), with_zero_columns(x, wide)) for x, dz in parts)  # [G, K rounded up]
        return total[:, :in_features].contiguous()  # -> [G, K]
    if in_features % VECTOR_FLOATS == 0 and out_features % VECTOR_FLOATS == 0:
        return _sum_of_products((dz.t(), x) for x, dz in parts)
    return contiguous(_sum_of_products((x.t(), dz) for x, dz in parts).t())  # [K, G] -> [G, K]


def _sum_of_products(pairs: Iterable[tuple[Tensor, Tensor]]) -> Tensor:
    """``sum of left @ right`` over the pairs, accumulated into the first product."""
    total = None
    for left, right in pairs:
        total = left @ right if total is None else total.addmm_(left, right)
    return total


def padded_width(in_features: int) -> int:
    """``in_features`` rounded up to whole cache lines of floats."""
    return -(-in_features // CACHE_LINE_FLOATS) * CACHE_LINE_FLOATS


def padding_pays(in_features: int) -> bool:
    """Whether rows of ``in_features`` floats are worth padding to whole cache lines: they are not whole
    vectors, and padding adds at most ``PAD_MAX_GROWTH`` columns."""
    return in_features % VECTOR_FLOATS != 0 and padded_width(in_features) <= PAD_MAX_GROWTH * in_features


def pads_input_gradient(rows: int, in_features: int) -> bool:
    """Whether ``input_gradient`` multiplies by a padded copy of the weight (see the module's docstring)."""
    return rows >= PAD_MIN_ROWS and padding_pays(in_features)


def with_zero_columns(matrix: Tensor, width: int) -> Tensor:
    """A copy of ``matrix`` ``[M, K]`` widened to ``[M, width]`` with zero columns on the right."""
    wide = matrix.new_zeros(matrix.shape[0], width)
    wide[:, : matrix.shape[1]] = matrix
    return wide


def input_gradient(dz: Tensor, weight: Tensor) -> Tensor:
    """``dz @ weight``, contiguous: the ``[N, K]`` gradient of the rows x that a weight ``W [G, K]`` maps to
    the rows of z, from their gradient ``dz [N, G]``. On oneDNN where that pays (``onednn_linear``), else
    on MKL, padded where that pays."""
    if input_gradient_on_onednn(dz, weight):
        return linear_on_onednn(dz, weight.t())  # weight^T [K, G]: x's features as outputs
    rows, in_features = dz.shape[0], weight.shape[1]
    if not (fused_applies(dz, weight) and pads_input_gradient(rows, in_features)):
        return dz @ weight
    wide = with_zero_columns(weight, padded_width(in_features))  # [G, K rounded up]
    return (dz @ wide)[:, :in_features].contiguous()  # [N, K rounded up] -> [N, K]
