"""The small matrix product a time loop repeats at every step, on the fastest CPU kernel at hand.

Inside a window, each step multiplies ``B`` rows by the same recurrent weight: ``a<t-1> W_aa^T`` forward
(``[B, H] x [H, G*H]``) and ``dz<t> W_aa`` backward (``[B, G*H] x [G*H, H]``). With ``B`` = 20-64 these
are thin products that MKL's general ``addmm`` runs well below the machine's peak. Two ways to run them,
each with the weight laid out once per window:

- ``panels``: lmtrain's own C kernel (``kernels/panel_product.c``), a register-blocked product for exactly
  this shape, where ``panel_product_pays`` says it beats ``addmm`` (fp32 CPU tensors, the C kernels built
  for this CPU's vector width);
- ``addmm``: torch's product on a contiguous copy of the transposed weight, everywhere else (CUDA, float64,
  bf16, no C kernels).

Both agree to float rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lmtrain.fast.kernels import fused_applies
from lmtrain.fast.kernels.panel_product import PanelWeight, panel_product_pays

LAYOUT_MIN_STEPS = 16
"""A loop of fewer products multiplies the weight as it is: laying it out (packing panels, or a transposed
copy) costs as much as several products, which a one-step window (a generation prompt of one token) never
repays."""


class StepProduct:
    """``add + x @ weight^T`` (``add`` optional) for many ``x`` of one batch size and a fixed ``weight``.

    ``weight`` ``[N, K]`` is in ``nn.Linear``'s layout (out features by in features). Each call returns a new
    tensor and leaves ``x`` and ``add`` as they are. ``steps``, when given, is how many products the loop
    will compute; below ``LAYOUT_MIN_STEPS`` the weight is multiplied as it is. ``backend`` forces one of
    ``BACKENDS`` (tests and benchmarks); ``self.backend`` is the one used.
    """

    BACKENDS = ("panels", "addmm")

    def __init__(self, weight: Tensor, batch: int, steps: int | None = None, backend: str | None = None):
        short_loop = steps is not None and steps < LAYOUT_MIN_STEPS
        self.backend = backend or self.choose_backend(weight, short_loop)
        if self.backend not in self.BACKENDS:
            raise ValueError(f"backend {self.backend!r} is not one of {', '.join(self.BACKENDS)}")
        if self.backend == "panels":
            self.panels = PanelWeight(weight, batch)
        else:
            # [K, N]: a contiguous copy multiplies faster; a short loop does not repay the copy.
            self.weight_t = weight.t() if short_loop else weight.t().contiguous()

    @staticmethod
    def choose_backend(weight: Tensor, short_loop: bool) -> str:
        """The faster backend that applies to ``weight`` (see the module's docstring)."""
        if not short_loop and fused_applies(weight) and panel_product_pays(weight.shape[0]):
            return "panels"
        return "addmm"

    def __call__(self, x: Tensor, add: Tensor | None = None, out: Tensor | None = None) -> Tensor:
        """``add + x @ weight^T`` (or ``x @ weight^T``): ``x`` ``[B, K]``, ``add`` ``[B, N]``. ``out``, a
        contiguous ``[B, N]`` tensor of the weight's dtype, receives the result when given (a loop that
        consumes each product before the next reuses one buffer instead of allocating one per step)."""
        if self.backend == "panels":
            return self.panels(x, add, out)
        if add is None:
            return torch.mm(x, self.weight_t, out=out)
        return torch.addmm(add, x, self.weight_t, out=out)
