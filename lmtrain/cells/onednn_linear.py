"""A window's large products on oneDNN where it beats MKL: the input projection and the inputs' gradient.

A window multiplies all of its T*B rows by the input weight ``W_ax`` ``[G, K]`` twice: forward, the input
projection ``z = b + x W_ax^T`` (``[N, K] x [K, G]``), and backward, the inputs' gradient ``dx = dz W_ax``
(``[N, G] x [G, K]``). torch runs both on MKL. On the README's CPU (AMD EPYC with AVX-512) oneDNN, the
library behind ``nn.LSTM``, multiplies faster: 190-220 GFLOP/s on a weight laid out in its blocked
format, against MKL's 150-180 on the same shapes. Laying the weight out costs a pass over it (and, for
``dx``, a transposed copy first), so oneDNN pays only on enough rows. Measured per product, the layout
included, interleaved (2 threads, G = 4H, K = H):

- the projection: 1.09-1.48x at N = 4,096 (H = 128 ... 1,024), 1.08-1.26x at H >= 512 and N >= 700;
  0.80-0.93x at H <= 256 and N <= 1,536 (``PROJECTION_MIN_MULTIPLY_ADDS``);
- the inputs' gradient: 1.16-1.46x at N = 4,096, 1.01-1.10x at H >= 512 and N = 1,024-1,280; 0.61-0.98x
  at N <= 700 (``INPUT_GRADIENT_MIN_ROWS``, ``INPUT_GRADIENT_MIN_MULTIPLY_ADDS``).

In one LSTM layer's training step (H = 650, B = 20, T = 35, and H = 1,024, B = 64, T = 64) the forward ran
1.04x faster and the backward 1.03-1.04x. The weights' gradients ``dz^T x`` stay on MKL
(``weight_gradient``): oneDNN needs ``dz^T`` as a contiguous copy, which cost more than it saved at H =
1,024 (0.90x in the layer's backward).

Both products agree with torch's to float rounding; ``onednn_available`` (``step_product``) checks once per
process that the private operators exist and compute what ``addmm`` computes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lmtrain.cells.step_product import onednn_available
from lmtrain.kernels import fused_applies

PROJECTION_MIN_MULTIPLY_ADDS = 1 << 28
"""The projection goes to oneDNN from this many multiply-adds (N * G * K; 2^28 is N = 4,096 at H = 128)."""

INPUT_GRADIENT_MIN_ROWS = 1024
INPUT_GRADIENT_MIN_MULTIPLY_ADDS = 1 << 29
"""The inputs' gradient goes to oneDNN from this many rows and multiply-adds (2^29: N = 2,048 at H = 256)."""


def laid_out_for_onednn(weight: Tensor, rows: int) -> Tensor:
    """The weight ``[N, K]`` (fp32 CPU) in oneDNN's blocked layout for products with ``rows`` rows."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), rows)


def linear_on_onednn(x: Tensor, weight: Tensor, bias: Tensor | None = None, laid_out: bool = False) -> Tensor:
    """``bias + x @ weight^T`` on oneDNN (fp32 CPU), the weight ``[N, K]`` laid out for ``x``'s rows first
    unless ``laid_out`` says it already is (by ``laid_out_for_onednn``)."""
    if not laid_out:
        weight = laid_out_for_onednn(weight, x.shape[0])
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, "none", [], "")


def _onednn_applies(*tensors: Tensor) -> bool:
    return fused_applies(*tensors) and onednn_available()


def projection_on_onednn(x: Tensor, weight: Tensor) -> bool:
    """Whether ``x @ weight^T`` (``[N, K] x [K, G]``) is expected to run faster on oneDNN (see the rules)."""
    rows, (out_features, in_features) = x.shape[0], weight.shape
    return rows * out_features * in_features >= PROJECTION_MIN_MULTIPLY_ADDS and _onednn_applies(x, weight)


def input_projection(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``bias + x @ weight^T`` for a window's rows ``x`` ``[N, K]`` and its input weight ``[G, K]``."""
    if projection_on_onednn(x, weight) and fused_applies(bias):
        return linear_on_onednn(x, weight, bias)
    return torch.addmm(bias, x, weight.t())


def input_gradient_on_onednn(dz: Tensor, weight: Tensor) -> bool:
    """Whether ``dz @ weight`` (``[N, G] x [G, K]``) is expected to run faster on oneDNN (see the rules)."""
    rows, (out_features, in_features) = dz.shape[0], weight.shape
    return (
        rows >= INPUT_GRADIENT_MIN_ROWS
        and rows * out_features * in_features >= INPUT_GRADIENT_MIN_MULTIPLY_ADDS
        and _onednn_applies(dz, weight)
    )
