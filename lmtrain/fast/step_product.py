"""The small matrix product a time loop repeats at every step, on the fastest CPU kernel at hand.

Inside a window, each step multiplies ``B`` rows by the same recurrent weight: ``a<t-1> W_aa^T`` forward
(``[B, H] x [H, G*H]``) and ``dz<t> W_aa`` backward (``[B, G*H] x [G*H, H]``). With ``B`` = 20-64 these
are thin products that MKL's general ``addmm`` runs well below the machine's peak (about 60% at H = 1024
on the README's CPU). Two kernels do better with the weight laid out once per window:

- ``panels``: lmtrain's own C kernel (``lmtrain/kernels/panel_product.c``), a register-blocked product
  for exactly this shape, 1.0-1.3x oneDNN's speed and 1.0-1.8x ``addmm``'s on the AVX2 EPYC of sessions
  6-9; on session 10's AVX-512 EPYC 1.1-1.6x ``addmm``'s at H = 128-256 but 0.93-1.05x oneDNN's;
- ``onednn``: oneDNN (``torch.ops.mkldnn``, the library behind ``nn.LSTM`` on a CPU, through the
  operators torch's compiler uses for linear layers), 1.0-1.4x ``addmm``'s at H >= 512.

``StepProduct(weight, batch)`` picks the first that applies: ``panels`` for fp32 CPU tensors when the C
kernels are built for a CPU like the ones measured (see ``panel_product_pays``: on AVX-512 CPUs only where
oneDNN would not take the product), ``onednn`` for fp32 CPU weights of ``ONEDNN_MIN_WIDTH`` or more when
torch has it, and ``addmm`` everywhere else (CUDA, float64, bf16, or neither kernel at hand); all agree to
float rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lmtrain.fast.kernels import fused_applies
from lmtrain.fast.kernels.layout import contiguous
from lmtrain.fast.kernels.panel_product import PanelWeight, panel_product_pays
from lmtrain.fast.onednn_linear import laid_out_for_onednn, linear_on_onednn, onednn_available

ONEDNN_MIN_WIDTH = 512
"""Weights with a shorter side keep ``addmm``. Measured per product on the README's CPU (B = 64): oneDNN
was 1.0-1.4x faster for every LSTM and GRU product at H = 512 (1.1-1.6x at B = 20, H = 650), mixed at
H = 256-384 (0.8-1.2x) and slower at H = 128 (0.4-0.8x)."""

LAYOUT_MIN_STEPS = 16
"""A loop of fewer products multiplies the weight as it is. On the README's CPU, laying a ``[2048, 512]``
weight out took 0.5-1.0 ms for oneDNN and 1.7 ms as a transposed copy, against 0.1-0.5 ms per product; a
one-step window (priming generation with a one-token context) spent most of its time doing it."""


class StepProduct:
    """``add + x @ weight^T`` (``add`` optional) for many ``x`` of one batch size and a fixed ``weight``.

    ``weight`` ``[N, K]`` is in ``nn.Linear``'s layout (out features by in features). Each call returns a new
    tensor and leaves ``x`` and ``add`` as they are. ``steps``, when given, is how many products the loop
    will compute: laying the weight out (panels, oneDNN's blocked format, or a transposed copy for
    ``addmm``) costs as much as several products, so below ``LAYOUT_MIN_STEPS`` the weight is multiplied as
    it is. ``backend`` forces one of ``BACKENDS`` (tests and benchmarks); ``self.backend`` is the one used.
    """

    BACKENDS = ("panels", "onednn", "addmm")

    def __init__(self, weight: Tensor, batch: int, steps: int | None = None, backend: str | None = None):
        short_loop = steps is not None and steps < LAYOUT_MIN_STEPS
        self.backend = backend or self.choose_backend(weight, short_loop)
        if self.backend not in self.BACKENDS:
            raise ValueError(f"backend {self.backend!r} is not one of {', '.join(self.BACKENDS)}")
        if self.backend == "panels":
            self.panels = PanelWeight(weight, batch)
        elif self.backend == "onednn":
            self.weight = laid_out_for_onednn(weight, batch)
        else:
            # [K, N]: a contiguous copy multiplies faster; a short loop does not repay the copy.
            self.weight_t = weight.t() if short_loop else contiguous(weight.t())

    @staticmethod
    def choose_backend(weight: Tensor, short_loop: bool) -> str:
        """The fastest backend that applies to ``weight`` (see the module's docstring)."""
        if short_loop or not fused_applies(weight):
            return "addmm"
        onednn_pays = min(weight.shape) >= ONEDNN_MIN_WIDTH and onednn_available()
        if panel_product_pays(weight.shape[0], onednn_alternative=onednn_pays):
            return "panels"
        return "onednn" if onednn_pays else "addmm"

    def __call__(self, x: Tensor, add: Tensor | None = None, out: Tensor | None = None) -> Tensor:
        """``add + x @ weight^T`` (or ``x @ weight^T``): ``x`` ``[B, K]``, ``add`` ``[B, N]``. ``out``, a
        contiguous ``[B, N]`` tensor of the weight's dtype, receives the result when given (a loop that
        consumes each product before the next reuses one buffer instead of allocating one per step)."""
        if self.backend == "panels":
            return self.panels(x, add, out)
        if self.backend == "onednn":
            if add is None:
                product = linear_on_onednn(x, self.weight)
            else:
                product = torch.ops.mkldnn._linear_pointwise.binary(x, add, self.weight, None, "add")
            return product if out is None else out.copy_(product)
        if add is None:
            return torch.mm(x, self.weight_t, out=out)
        return torch.addmm(add, x, self.weight_t, out=out)

    def reusing(self, x: Tensor, buffer: Tensor) -> Tensor:
        """``x @ weight^T``, written into ``buffer`` (as ``out``) by the backends that write where they are
        told; oneDNN's returns a new tensor instead, which saves copying it (the loops' steps call this:
        use the result, not ``buffer``)."""
        return self(x) if self.backend == "onednn" else self(x, out=buffer)
