"""A window's large products on oneDNN where it beats MKL: the input projection and the gradients.

A window multiplies all of its T*B rows by the input weight ``W_ax`` ``[G, K]`` twice: forward, the input
projection ``z = b + x W_ax^T`` (``[N, K] x [K, G]``), and backward, the inputs' gradient ``dx = dz W_ax``
(``[N, G] x [G, K]``); and the LSTM's weight gradients ``dz^T x`` and ``dz^T a<t-1>`` multiply over the
same N rows. torch runs all of them on MKL. On the README's CPU since session 10 (an AMD EPYC with
AVX-512) oneDNN, the library behind ``nn.LSTM``, multiplies faster: 190-220 GFLOP/s against MKL's 140-180
on the same shapes (asking MKL for AVX-512 code with ``MKL_ENABLE_INSTRUCTIONS=AVX512`` changed nothing).
On the AVX2 EPYC of earlier sessions the two were level (session 9: 20.2-22.7 ms against 16.9-23.6 at the
word model's size), so oneDNN takes these products only on AVX-512 CPUs not made by Intel
(``onednn_outpaces_mkl``; MKL's own AVX-512 code serves Intel's, unmeasured here).

The weight goes to oneDNN as a plain contiguous matrix, which its matmul kernel (``brg_matmul``) packs
block by block as it multiplies; a transposed view (``W_ax`` for ``dx``, x for the weight gradients) is
copied first by ``lmtrain.fast.kernels.layout``'s tiled transpose. Session 10 laid each weight out in
oneDNN's blocked format first, a separate pass over it, as the per-step products must; session 11
measured the plain weight 1.0-1.2x faster per product at N = 700 and level at N = 4,096, and with it
oneDNN pays from fewer rows. Measured per product, interleaved, the copies included (session 11, 2
threads, G = 4H, K = H, N = 640 ... 4,096):

- the projection: 1.05-1.47x MKL's at 2^27 multiply-adds or more (``MIN_MULTIPLY_ADDS``); 0.95x at H =
  128 and N = 1,024-1,280, below it;
- the inputs' gradient: 1.03-1.80x from 2^27 (0.97x at H = 128, N = 640, below it); at the word model's
  700 rows 1.16x;
- one weight gradient, ``dz^T`` copied for it alone: 1.21-1.64x at K >= 512 and N <= 2,048, 0.96-1.27x at
  N = 4,096; 0.74-1.08x at K <= 256 (``WEIGHT_GRADIENTS_MIN_WIDTH``). The LSTM copies ``dz^T`` once for
  its two (``weight_gradients``); the GRUs keep MKL for theirs.

Every product agrees with torch's to float rounding; ``onednn_available`` checks once per process that the
private operators exist and compute what ``addmm`` computes. ``laid_out_for_onednn`` (the blocked format,
for a weight multiplied many times) and ``linear_on_onednn`` also serve ``StepProduct``'s per-step
products and the benchmarks' matmul peak.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import Tensor

from lmtrain.fast.kernels import fused_applies
from lmtrain.fast.kernels.layout import contiguous

MIN_MULTIPLY_ADDS = 1 << 27
"""The projection and the inputs' gradient go to oneDNN from this many multiply-adds (N * G * K; 2^27 is N =
2,048 at H = 128, N = 512 at H = 256)."""

WEIGHT_GRADIENTS_MIN_WIDTH = 512
WEIGHT_GRADIENTS_MAX_ROWS = 4096
"""The LSTM's weight gradients go to oneDNN for products at least this wide (K, the columns of the gradient)
and of at least ``MIN_MULTIPLY_ADDS``, over at most this many rows: the copy of ``dz^T`` is as large as
the window's gates (105 MB at H = 1,024 and 6,400 rows), memory MKL's product does without."""


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
            products = (
                mkldnn._linear_pointwise.binary(x, add, packed, None, "add"),
                mkldnn._linear_pointwise(x, packed, None, "none", [], ""),
                mkldnn._linear_pointwise(x, weight, None, "none", [], ""),  # the weight as a plain matrix
            )
    except RuntimeError:
        return False
    expected = torch.addmm(add, x, weight.t()), x @ weight.t(), x @ weight.t()
    return all(torch.allclose(a, b, rtol=1e-4, atol=1e-4) for a, b in zip(products, expected, strict=True))


def laid_out_for_onednn(weight: Tensor, rows: int) -> Tensor:
    """The weight ``[N, K]`` (fp32 CPU) in oneDNN's blocked layout for products with ``rows`` rows (a
    transposed view is copied contiguous by ``lmtrain.fast.kernels.layout``'s tiled transpose first)."""
    return torch.ops.mkldnn._reorder_linear_weight(contiguous(weight), rows)


def linear_on_onednn(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``bias + x @ weight^T`` on oneDNN (fp32 CPU) for a weight ``[N, K]`` laid out by
    ``laid_out_for_onednn`` or a plain one (a transposed view is copied contiguous first: oneDNN's kernel
    for a strided weight is its slow reference code)."""
    if weight.layout == torch.strided:
        weight = contiguous(weight)
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


def projection_on_onednn(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> bool:
    """Whether ``bias + x @ weight^T`` (``[N, K] x [K, G]``, the bias optional) is expected to run faster on
    oneDNN (see the rules)."""
    rows, (out_features, in_features) = x.shape[0], weight.shape
    tensors = (x, weight) if bias is None else (x, weight, bias)
    return rows * out_features * in_features >= MIN_MULTIPLY_ADDS and _onednn_applies(*tensors)


def input_projection(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``bias + x @ weight^T`` for a window's rows ``x`` ``[N, K]`` and its input weight ``[G, K]``."""
    if projection_on_onednn(x, weight, bias):
        return linear_on_onednn(x, weight, bias)
    return torch.addmm(bias, x, weight.t())


def input_gradient_on_onednn(dz: Tensor, weight: Tensor) -> bool:
    """Whether ``dz @ weight`` (``[N, G] x [G, K]``) is expected to run faster on oneDNN (see the rules)."""
    rows, (out_features, in_features) = dz.shape[0], weight.shape
    return rows * out_features * in_features >= MIN_MULTIPLY_ADDS and _onednn_applies(dz, weight)


def weight_gradients_on_onednn(dz: Tensor, in_features: int) -> bool:
    """Whether products ``dz^T x`` (``[G, N] x [N, K]``, K = ``in_features``) are expected to run faster on
    oneDNN, ``dz^T`` copied once for all of them (see the module's docstring)."""
    rows, out_features = dz.shape
    return (
        in_features >= WEIGHT_GRADIENTS_MIN_WIDTH
        and rows <= WEIGHT_GRADIENTS_MAX_ROWS
        and rows * out_features * in_features >= MIN_MULTIPLY_ADDS
        and _onednn_applies(dz)
    )


def weight_gradients(dz: Tensor, *inputs: Tensor) -> list[Tensor]:
    """``dz^T x`` (``[G, K]``) for each x ``[N, K]`` of ``inputs`` on oneDNN (fp32 CPU): the weight
    gradients of the maps from the rows of each x to the rows of z, given ``dz`` ``[N, G]``."""
    rows_of_products = contiguous(dz.t())  # [G, N]: oneDNN's rows, one copy for every product
    return [linear_on_onednn(rows_of_products, x.t()) for x in inputs]  # x^T [K, N]: the weight
