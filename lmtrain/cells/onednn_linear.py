"""A window's large products on oneDNN where it beats MKL: the input projection and the gradients.

A window multiplies all of its T*B rows by the input weight ``W_ax`` ``[G, K]`` twice: forward, the input
projection ``z = b + x W_ax^T`` (``[N, K] x [K, G]``), and backward, the inputs' gradient ``dx = dz W_ax``
(``[N, G] x [G, K]``). torch runs both on MKL. On the README's CPU in session 10 (an AMD EPYC with
AVX-512) oneDNN, the library behind ``nn.LSTM``, multiplies faster: 190-220 GFLOP/s on a weight laid out
in its blocked format, against MKL's 150-180 on the same shapes (asking MKL for AVX-512 code with
``MKL_ENABLE_INSTRUCTIONS=AVX512`` changed nothing). On the AVX2 EPYC of earlier sessions the two were
level (session 9: 20.2-22.7 ms against 16.9-23.6 at the word model's size), so oneDNN takes these products
only on AVX-512 CPUs not made by Intel (``onednn_outpaces_mkl``; MKL's own AVX-512 code serves Intel's,
unmeasured here). Laying the weight out costs a pass over it (and, for ``dx``, a transposed copy first), so
oneDNN pays only on enough rows. Measured per product, the layout included, interleaved (2 threads, G =
4H, K = H):

- the projection: 1.09-1.48x at N = 4,096 (H = 128 ... 1,024), 1.08-1.26x at H >= 512 and N >= 700;
  0.80-0.93x at H <= 256 and N <= 1,536 (``PROJECTION_MIN_MULTIPLY_ADDS``);
- the inputs' gradient: 1.16-1.46x at N = 4,096, 1.01-1.10x at H >= 512 and N = 1,024-1,280; 0.61-0.98x
  at N <= 700 (``INPUT_GRADIENT_MIN_ROWS``, ``INPUT_GRADIENT_MIN_MULTIPLY_ADDS``).

In one LSTM layer's training step (H = 650, B = 20, T = 35, and H = 1,024, B = 64, T = 64) the forward ran
1.04x faster and the backward 1.03-1.04x.

The LSTM's two weight gradients ``dz^T x`` and ``dz^T a<t-1>`` go to oneDNN too on windows of at most
``WEIGHT_GRADIENTS_MAX_ROWS`` rows (``weight_gradients_on_onednn``). oneDNN takes the product's rows
contiguous, so ``dz^T`` ``[G, N]`` is copied once for both, and each of x and a<t-1> is laid out as its
weight. One LSTM layer's backward, alternating with MKL's products in one process: 1.06x at H = 650, B =
20, T = 35 (the word model's layer), 1.04x at B = 64; the word model's two-layer stack 1.035x. At N = 4,096
the copy of ``dz^T`` costs about what oneDNN saves (0.965x at H = 512, 0.99x at 1,024); the GRUs keep MKL.

Both products agree with torch's to float rounding; ``onednn_available`` checks once per process that the
private operators exist and compute what ``addmm`` computes. ``laid_out_for_onednn`` and
``linear_on_onednn`` also serve ``StepProduct``'s per-step products and the benchmarks' matmul peak.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import Tensor

from lmtrain.kernels import fused_applies
from lmtrain.kernels.layout import contiguous

PROJECTION_MIN_MULTIPLY_ADDS = 1 << 28
"""The projection goes to oneDNN from this many multiply-adds (N * G * K; 2^28 is N = 4,096 at H = 128)."""

INPUT_GRADIENT_MIN_ROWS = 1024
INPUT_GRADIENT_MIN_MULTIPLY_ADDS = 1 << 29
"""The inputs' gradient goes to oneDNN from this many rows and multiply-adds (2^29: N = 2,048 at H = 256)."""

WEIGHT_GRADIENTS_MAX_ROWS = 2240
WEIGHT_GRADIENTS_MIN_MULTIPLY_ADDS = 1 << 28
"""The LSTM's weight gradients go to oneDNN up to this many rows (the most measured to gain: B = 64, T = 35)
and from this many multiply-adds per product."""


@functools.cache
def onednn_available() -> bool:
    """Whether this torch has oneDNN's linear operators (CPU builds with mkldnn) and they compute what
    ``addmm`` computes. The operators are private to torch, so their behaviour is checked once per
    process on a small product rather than trusted across torch releases."""
    mkldnn = torch.ops.mkldnn
    present = torch.backends.mkldnn.is_available() and all(
        hasattr(mkldnn, name) for name in ("_linear_pointwise", "_reorder_linear_weight")
    )
    if not present:
        return False
    generator = torch.Generator().manual_seed(0)
    weight, x, add = (torch.randn(*shape, generator=generator) for shape in ((24, 16), (3, 16), (3, 24)))
    try:
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            packed = mkldnn._reorder_linear_weight(weight, 3)
            product = mkldnn._linear_pointwise.binary(x, add, packed, None, "add")
            plain = mkldnn._linear_pointwise(x, packed, None, "none", [], "")
    except RuntimeError:
        return False
    return torch.allclose(product, torch.addmm(add, x, weight.t()), rtol=1e-4, atol=1e-4) and torch.allclose(
        plain, x @ weight.t(), rtol=1e-4, atol=1e-4
    )


def laid_out_for_onednn(weight: Tensor, rows: int) -> Tensor:
    """The weight ``[N, K]`` (fp32 CPU) in oneDNN's blocked layout for products with ``rows`` rows (a
    transposed view is copied contiguous by ``lmtrain.kernels.layout``'s tiled transpose first)."""
    return torch.ops.mkldnn._reorder_linear_weight(contiguous(weight), rows)


def linear_on_onednn(x: Tensor, weight: Tensor, bias: Tensor | None = None, laid_out: bool = False) -> Tensor:
    """``bias + x @ weight^T`` on oneDNN (fp32 CPU), the weight ``[N, K]`` laid out for ``x``'s rows first
    unless ``laid_out`` says it already is (by ``laid_out_for_onednn``)."""
    if not laid_out:
        weight = laid_out_for_onednn(weight, x.shape[0])
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, "none", [], "")


def cpu_vendor() -> str:
    """The CPU's maker as Linux names it (``GenuineIntel``, ``AuthenticAMD``), or "" where not listed."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


@functools.cache
def onednn_outpaces_mkl() -> bool:
    """Whether this is the kind of CPU where oneDNN's products were measured faster than MKL's: torch runs
    AVX-512 code here, and the CPU is not Intel's (see the module's docstring)."""
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512") and cpu_vendor() != "GenuineIntel"


def _onednn_applies(*tensors: Tensor) -> bool:
    return fused_applies(*tensors) and onednn_outpaces_mkl() and onednn_available()


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


def weight_gradients_on_onednn(dz: Tensor, in_features: int) -> bool:
    """Whether products ``dz^T x`` (``[G, N] x [N, K]``, K = ``in_features``) are expected to run faster on
    oneDNN, ``dz^T`` copied once for all of them (see the module's docstring)."""
    rows, out_features = dz.shape
    return (
        rows <= WEIGHT_GRADIENTS_MAX_ROWS
        and rows * out_features * in_features >= WEIGHT_GRADIENTS_MIN_MULTIPLY_ADDS
        and _onednn_applies(dz)
    )


def weight_gradients(dz: Tensor, *inputs: Tensor) -> list[Tensor]:
    """``dz^T x`` (``[G, K]``) for each x ``[N, K]`` of ``inputs`` on oneDNN (fp32 CPU): the weight
    gradients of the maps from the rows of each x to the rows of z, given ``dz`` ``[N, G]``."""
    rows_of_products = contiguous(dz.t())  # [G, N]: oneDNN's rows, one copy for every product
    return [linear_on_onednn(rows_of_products, x.t()) for x in inputs]  # x^T [K, N]: the weight
