"""``panel_product.c``'s per-step product as a Python call on tensors.

``PanelWeight(weight, batch)`` packs a weight ``[N, K]`` (``nn.Linear``'s layout, any strides: ``W_aa.t()``
is packed without a transposed copy) into the kernel's panels once; calling it with ``x`` ``[M, K]``
(``M <= batch``) returns ``add + x @ weight^T``. ``panel_product_available()`` says whether the kernels
are built (see ``compiler``); the caller checks that the tensors are fp32 on the CPU (``fused_applies``).
"""

from __future__ import annotations

import ctypes
import functools

import torch
from torch import Tensor

from lmtrain.fast.kernels import ADDRESS, SIZE, c_function, fused_applies, pointer
from lmtrain.fast.kernels.compiler import kernel_library
from lmtrain.fast.switches import piece_off

PANEL_WIDTH = 16
"""Output columns per panel (``panel_product.c``); the threads share the panels out."""


class _PanelKernels:
    def __init__(self, library: ctypes.CDLL):
        self.tuned = c_function(library, "panel_product_tuned", [], ctypes.c_int)()  # UNTUNED, AVX2 or AVX512
        self.weight_size = c_function(library, "packed_weight_size", [SIZE, SIZE], SIZE)
        self.rows_size = c_function(library, "packed_rows_size", [SIZE, SIZE], SIZE)
        self.pack_weight = c_function(library, "pack_weight", [SIZE, SIZE, ADDRESS, SIZE, SIZE, ADDRESS])
        self.product = c_function(library, "panel_product", [SIZE, SIZE, SIZE, *[ADDRESS] * 5])


@functools.cache
def _kernels() -> _PanelKernels | None:
    library = kernel_library()
    return None if library is None else _PanelKernels(library)


def panel_product_available() -> bool:
    """Whether the C kernels are built and loaded in this process (the product then computes correctly)."""
    return _kernels() is not None


PANELS_PER_THREAD = 8
"""The panel product is chosen only when each thread gets at least this many panels of 16 rows: with fewer,
the threads' share of a thin product is too small to beat ``addmm`` (``scripts/bench_step_products.py``)."""


UNTUNED, AVX2, AVX512 = 0, 1, 2
"""What ``panel_product_tuned`` in C says of the build: portable (one thread), or OpenMP with AVX2 FMA
vectors on a CPU without or with AVX-512."""


def panel_product_pays(out_features: int) -> bool:
    """Whether the panel product is expected to beat ``addmm`` for a weight of ``out_features`` rows: the
    kernels are built with vector code for this CPU (``panel_product_tuned`` in C: AVX2 or AVX-512), and
    every thread gets at least ``PANELS_PER_THREAD`` panels."""
    kernels = _kernels()
    if kernels is None or kernels.tuned == UNTUNED or piece_off("panels"):
        return False
    return out_features >= PANELS_PER_THREAD * PANEL_WIDTH * torch.get_num_threads()


class PanelWeight:
    """``add + x @ weight^T`` for many ``x`` of at most ``batch`` rows and a fixed fp32 CPU ``weight``."""

    def __init__(self, weight: Tensor, batch: int):
        kernels = _kernels()
        if kernels is None:
            raise RuntimeError("the C kernels are not available (see lmtrain.fast.kernels.compiler)")
        self._kernels = kernels
        self.out_features, self.in_features = weight.shape
        self.packed = weight.new_empty(kernels.weight_size(self.out_features, self.in_features))
        kernels.pack_weight(
            self.out_features,
            self.in_features,
            weight.data_ptr(),
            weight.stride(0),
            weight.stride(1),
            self.packed.data_ptr(),
        )
        self.batch = batch
        self._packed_rows = weight.new_empty(kernels.rows_size(batch, self.in_features))  # scratch

    def __call__(self, x: Tensor, add: Tensor | None = None, out: Tensor | None = None) -> Tensor:
        """``add + x @ weight^T`` (or ``x @ weight^T``): ``x`` ``[M, K]``, ``add`` ``[M, N]``; written into
        ``out`` (a contiguous ``[M, N]`` tensor that overlaps neither) when given, else a new tensor."""
        rows = x.shape[0]
        if not fused_applies(*(t for t in (x, add) if t is not None)):
            raise ValueError("the panel product takes fp32 CPU tensors")
        if x.shape[1] != self.in_features or rows > self.batch:
            raise ValueError(f"x {tuple(x.shape)} does not fit a [{self.batch}, {self.in_features}] product")
        if add is not None and add.shape != (rows, self.out_features):
            raise ValueError(f"add {tuple(add.shape)} is not [{rows}, {self.out_features}]")
        # contiguous copies kept in names until the call returns (a bare temporary would be freed first)
        x, add = x.contiguous(), None if add is None else add.contiguous()
        if out is None:
            out = x.new_empty(rows, self.out_features)
        elif out.shape != (rows, self.out_features) or not (fused_applies(out) and out.is_contiguous()):
            raise ValueError(f"out must be a contiguous fp32 CPU tensor of [{rows}, {self.out_features}]")
        self._kernels.product(
            rows,
            self.out_features,
            self.in_features,
            pointer(x),
            self.packed.data_ptr(),
            pointer(add),
            out.data_ptr(),
            self._packed_rows.data_ptr(),
        )
        return out
