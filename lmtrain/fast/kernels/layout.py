"""Contiguous copies of transposed weights, by the tiled transpose of ``layout.c``.

A window lays its recurrent weight out once for the products of every step, and the backward pass
needs it transposed. torch's ``W.t().contiguous()`` is several times slower on a CPU than a tiled copy
(see ``layout.c``); ``contiguous(matrix)`` uses the tiled copy where it applies (an fp32 CPU matrix that is
the transposed view of a contiguous one, and the kernels built) and ``matrix.contiguous()`` elsewhere.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from torch import Tensor

from lmtrain.fast.kernels import ADDRESS, SIZE, c_function, fused_applies
from lmtrain.fast.kernels.compiler import kernel_library


@functools.cache
def _transpose() -> Callable | None:
    library = kernel_library()
    if library is None:
        return None
    return c_function(library, "transpose", [SIZE, SIZE, ADDRESS, ADDRESS])


def contiguous(matrix: Tensor) -> Tensor:
    """``matrix.contiguous()`` for a 2-D ``matrix``, transposed views copied by the tiled transpose."""
    if matrix.is_contiguous() or not (
        matrix.dim() == 2 and matrix.t().is_contiguous() and fused_applies(matrix)
    ):
        return matrix.contiguous()
    transpose = _transpose()
    if transpose is None:
        return matrix.contiguous()
    source = matrix.t()  # [cols, rows], contiguous
    out = matrix.new_empty(matrix.shape)
    transpose(source.shape[0], source.shape[1], source.data_ptr(), out.data_ptr())
    return out
