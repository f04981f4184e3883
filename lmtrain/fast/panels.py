"""Matrix products for generation, one token at a time, shared out across the CPU's cores.

A generation step multiplies a few rows (one per stream) by each weight matrix, ``x [B, K] @ W [K, N]``.
With one stream that is a matrix-vector product: it does two flops per weight it reads, so its speed is
the speed at which one core reads ``W`` from memory, and BLAS runs it on one core. ``ColumnPanels`` stores
``W`` cut into ``G`` panels of consecutive columns, ``[G, K, N/G]``, and multiplies them with one batched
product (``torch.baddbmm``), whose batch torch shares out across its threads: each core reads its own
panels. For one stream that is faster than one ``addmm``; from about 32 streams the two are level.

Panel ``g`` holds columns ``[g N/G, (g+1) N/G)``, so for one stream the product ``[G, 1, N/G]`` is
already the row ``[1, N]``; with more streams it is copied back to ``[B, N]``.

``generation_linear`` is what the generators use for a linear layer: the C kernel of
``kernels.generate`` (one call, every weight read once) for a few streams, panels otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lmtrain.fast.kernels import fused_applies
from lmtrain.fast.kernels.generate import by_stream_count, generation_kernels

MIN_PANELS = 4
"""At least this many panels, or one per thread where torch has more (fewer only where N does not
divide): on 2 cores, 4 panels of a ``[512, 2048]`` matrix measured faster than 2."""


def panel_count(columns: int) -> int:
    """The largest number of panels, up to ``max(MIN_PANELS, threads)``, that divides ``columns``."""
    most = max(MIN_PANELS, torch.get_num_threads())
    return next(count for count in range(most, 0, -1) if columns % count == 0)


class ColumnPanels:
    """``x @ W`` (plus an optional ``add``) for a few rows ``x``, with ``W`` ``[K, N]`` kept as column panels.

    Made once from a weight, for inference (no autograd): ``panels(x [B, K], add) -> [B, N]``, where
    ``add`` is ``[N]`` (a bias) or ``[B, N]`` (another product's result) or None.
    """

    def __init__(self, weight: Tensor, panels: int | None = None):
        rows, columns = weight.shape
        self.count = panels or panel_count(columns)
        self.width = columns // self.count
        # [K, N] -> [K, G, N/G] -> [G, K, N/G]: panel g is columns g*N/G ... (g+1)*N/G - 1.
        self.weight = weight.detach().reshape(rows, self.count, self.width).permute(1, 0, 2).contiguous()

    def __call__(self, x: Tensor, add: Tensor | None = None) -> Tensor:
        batch, rows = x.shape
        x_panels = x.expand(self.count, batch, rows)  # [G, B, K], no copy
        if batch == 1 and add is not None:  # the common case, in as few calls as possible
            product = torch.baddbmm(add.reshape(self.count, 1, self.width), x_panels, self.weight)
            return product.view(1, self.count * self.width)  # [G, 1, N/G] is already the row [1, N]
        if add is None:
            product = torch.bmm(x_panels, self.weight)  # [G, B, N/G]
        else:
            # [N] -> [G, 1, N/G]; [B, N] -> [B, G, N/G] -> [G, B, N/G]: views that baddbmm broadcasts.
            add = add.view(self.count, 1, self.width) if add.dim() == 1 else self._panelled(add)
            product = torch.baddbmm(add, x_panels, self.weight)  # [G, B, N/G]
        return product.transpose(0, 1).reshape(batch, self.count * self.width)  # [B, N]

    def _panelled(self, rows: Tensor) -> Tensor:
        """``[B, N]`` viewed as ``[G, B, N/G]``."""
        return rows.view(rows.shape[0], self.count, self.width).transpose(0, 1)


def generation_linear(weight: Tensor, bias: Tensor | None = None) -> Callable[[Tensor], Tensor]:
    """``x -> x W^T + bias`` for generation, ``weight`` ``[N, K]`` in ``nn.Linear``'s layout: the C kernel
    (``lmtrain.fast.kernels.generate``) for up to ``FEW_STREAMS`` fp32 CPU rows where it builds, column panels
    otherwise (laid out on first use where the kernel serves too). Both read the weights as they are now."""
    weight = weight.detach()
    bias = None if bias is None else bias.detach()

    def panels_linear() -> Callable[[Tensor], Tensor]:
        panels = ColumnPanels(weight.t())  # [K, N]
        return lambda x: panels(x, bias)

    kernels = generation_kernels() if fused_applies(weight) else None
    if kernels is None:
        return panels_linear()
    few_rows = kernels.linear_layer(weight.contiguous(), bias)
    return by_stream_count(lambda x: few_rows(x.contiguous()), panels_linear)
