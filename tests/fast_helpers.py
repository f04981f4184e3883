"""What the tests of the fast layer (`lmtrain.fast`) share: the mark that needs a C compiler, the cells with
a C generation step, and the check of a fused window against its step-by-step cell loop.

A plain module on pytest's `pythonpath` (`tests`), like `helpers`.
"""

import pytest
import torch
from torch.testing import assert_close

from lmtrain.fast.kernels import compiler

needs_kernels = pytest.mark.skipif(
    compiler.find_compiler() is None, reason="no C compiler here: the kernels cannot be built"
)

GENERATION_CELLS = {
    "lstm": {"cell": "lstm"},
    "gru": {"cell": "gru"},
    "gru-cudnn": {"cell": "gru", "gru_variant": "cudnn"},
    "rnn-tanh": {"cell": "rnn"},
    "rnn-relu": {"cell": "rnn", "nonlinearity": "relu"},
}
"""Every cell with a C generation step, by test id: ``ModelConfig`` fields."""


def assert_window_matches_cell_loop(layer, x: torch.Tensor, state, rtol: float, atol: float) -> None:
    """The layer's fused window (`_run_fused`) gives the outputs, and the gradients of x and of every
    parameter, that autograd gives through its step-by-step `_cell` loop (`_run_reference`)."""
    y, _ = layer._run_fused(x, state)
    reference, _ = layer._run_reference(x, state)
    assert_close(y, reference, rtol=rtol, atol=atol)
    upstream = torch.randn_like(y)
    inputs = (x, *layer.parameters())
    ours = torch.autograd.grad(y, inputs, upstream)
    expected = torch.autograd.grad(reference, inputs, upstream)
    for mine, theirs in zip(ours, expected, strict=True):
        assert_close(mine, theirs, rtol=rtol, atol=atol)
