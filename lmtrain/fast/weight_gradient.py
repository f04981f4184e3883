"""The two products of a linear map's backward over many rows: ``dW = dz^T x`` and ``dx = dz W``.

After a hand-written backward through time has every step's ``dz`` (``[N, G]`` for the N = T*B tokens of
a window), each weight's gradient is one product ``dz^T x`` (``[G, N] x [N, K]``) and the inputs' gradient
one product ``dz W`` (``[N, G] x [G, K]``). MKL runs them at different speeds depending on whether rows are
whole vectors and cache lines, so each product takes the form MKL runs fastest for its widths:

- ``weight_gradient``: ``dz^T x`` directly where K and G are multiples of 8 floats (whole AVX2 vectors);
  where K is not, on a copy of x padded with zero columns to whole cache lines when that adds at most
  2.5% columns (K of about 300 or more); else ``(x^T dz)^T`` copied back to ``[G, K]``.
- ``input_gradient``: for K not a multiple of 8 floats, MKL writes the ``[N, K]`` result slowly; a copy of
  ``W`` padded with zero columns to whole cache lines is faster from ``PAD_MIN_ROWS`` rows on.

``scripts/bench_step_products.py`` times the forms; ``docs/performance.md`` says what they gain end to end.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor

from lmtrain.fast.kernels import fused_applies
from lmtrain.fast.switches import piece_off

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
    if piece_off("gradient_forms"):
        return _sum_of_products((x.t(), dz) for x, dz in parts).t().contiguous()
    if fused_applies(*(t for part in parts for t in part)) and padding_pays(in_features):
        wide = padded_width(in_features)
        total = _sum_of_products((dz.t(), with_zero_columns(x, wide)) for x, dz in parts)  # [G, K rounded up]
        return total[:, :in_features].contiguous()  # -> [G, K]
    if in_features % VECTOR_FLOATS == 0 and out_features % VECTOR_FLOATS == 0:
        return _sum_of_products((dz.t(), x) for x, dz in parts)
    return _sum_of_products((x.t(), dz) for x, dz in parts).t().contiguous()  # [K, G] -> [G, K]


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
    the rows of z, from their gradient ``dz [N, G]``; on a padded weight where that pays."""
    rows, in_features = dz.shape[0], weight.shape[1]
    padded = fused_applies(dz, weight) and pads_input_gradient(rows, in_features)
    if piece_off("gradient_forms") or not padded:
        return dz @ weight
    wide = with_zero_columns(weight, padded_width(in_features))  # [G, K rounded up]
    return (dz @ wide)[:, :in_features].contiguous()  # [N, K rounded up] -> [N, K]
