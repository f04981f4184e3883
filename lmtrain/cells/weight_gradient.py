"""The gradient of a weight applied to many rows at once: ``dW = sum over rows of dz^T x``.

After a hand-written backward through time has every step's ``dz`` (``[N, G]`` for the N = T*B tokens of
a window), each weight's gradient is one product ``dz^T x`` (``[G, N] x [N, K]``). MKL runs the two ways
of writing it at different speeds, depending on whether rows are whole cache lines. Measured on the
README's CPU, interleaved, N = 1,280-4,096 tokens:

- K and G multiples of 16 floats (H = 128 ... 1024): ``dz^T x`` directly, 1.1-1.25x faster;
- H = E = 650 (the word-level model): ``(x^T dz)^T``, then copied back to ``[G, K]``, 1.05-1.2x faster.
  The copy is the tiled transpose of ``lmtrain.kernels.layout`` (about 0.5 ms for ``[2600, 650]``
  against 2.5-4.5 ms for torch's ``.contiguous()``).
"""

from __future__ import annotations

from torch import Tensor

from lmtrain.kernels.layout import contiguous

CACHE_LINE_FLOATS = 16


def weight_gradient(*parts: tuple[Tensor, Tensor]) -> Tensor:
    """``sum of dz^T x`` over the ``(x [N_i, K], dz [N_i, G])`` parts: the ``[G, K]`` gradient of a weight
    ``W [G, K]`` that maps each row of x to a row of the pre-activations z (several parts when the rows
    come from different tensors, such as the initial state and the outputs of later steps)."""
    in_features, out_features = parts[0][0].shape[1], parts[0][1].shape[1]
    direct = in_features % CACHE_LINE_FLOATS == 0 and out_features % CACHE_LINE_FLOATS == 0
    total = None
    for x, dz in parts:
        left, right = (dz.t(), x) if direct else (x.t(), dz)
        total = left @ right if total is None else total.addmm_(left, right)
    return total if direct else contiguous(total.t())
