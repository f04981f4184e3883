"""``LMTRAIN_FAST_OFF``: turning single pieces of the fast layer off, to measure what each gains."""

from __future__ import annotations

import functools
import os

from lmtrain.errors import LmtrainError

PIECES = ("panels", "gradient_forms", "dropout")
"""The pieces ``LMTRAIN_FAST_OFF`` can turn off one by one, to measure what each gains end to end
(``scripts/bench_train.py --variants``): the C panel kernel for the per-step products (``addmm`` instead),
the weight and input gradients' tuned forms (each weight gradient as ``(x^T dz)^T``, no padding), and
the fast dropout mask (``nn.Dropout``). The C kernels have their own switch, ``LMTRAIN_KERNELS=torch``."""


@functools.cache
def piece_off(piece: str) -> bool:
    """Whether ``LMTRAIN_FAST_OFF`` (comma-separated names of ``PIECES``) turns ``piece`` off."""
    named = {name.strip() for name in os.environ.get("LMTRAIN_FAST_OFF", "").split(",") if name.strip()}
    unknown = named - set(PIECES)
    if unknown:
        raise LmtrainError(
            f"LMTRAIN_FAST_OFF names {', '.join(sorted(unknown))}; the pieces are: {', '.join(PIECES)}"
        )
    return piece in named
