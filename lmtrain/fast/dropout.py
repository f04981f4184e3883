"""Dropout whose CPU mask costs a fraction of torch's.

``nn.Dropout`` draws its mask on the CPU with ``bernoulli_``, which costs several times more per element
than drawing integers; a word-level training step draws three masks as large as its activations
(embeddings, between the layers, before the decoder). Drawing 31-bit integers with ``random_`` from the
same generator and keeping those at or above ``p * 2^31`` gives the same distribution (P(keep) = 1 - p to
within 2^-32) at a third of the cost or less; ``docs/performance.md`` has the end-to-end figure.

Elsewhere (CUDA, where ``F.dropout`` is one fused kernel; other devices) ``nn.Dropout`` runs unchanged.
Either way the masks come from torch's global generator, so ``torch.manual_seed`` makes them repeat.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

RANDOM_BITS = 31
"""``random_()`` on an int32 tensor draws uniformly from ``[0, 2^31)``."""


def dropout_mask(shape: torch.Size, p: float, device: torch.device | str = "cpu") -> Tensor:
    """A bool tensor of ``shape``, each entry independently True (keep) with probability ``1 - p``."""
    threshold = round(p * 2**RANDOM_BITS)
    random = torch.empty(shape, dtype=torch.int32, device=device).random_()
    return random >= threshold


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same arguments, same function: zero each entry with probability ``p`` in training,
    scale the rest by ``1 / (1 - p)``), with the faster mask on the CPU."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu" or self.inplace or self.p == 1:
            return F.dropout(x, self.p, True, self.inplace)
        keep = dropout_mask(x.shape, self.p)
        # Autograd saves the bool mask (one byte per entry, as torch's dropout does): dx = dy * keep * scale.
        return torch.mul(x, keep).mul_(1 / (1 - self.p))
