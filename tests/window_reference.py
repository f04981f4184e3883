"""A check the tests of the windows' fast paths share: a fused window against its step-by-step cell loop."""

import torch
from torch.testing import assert_close


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
