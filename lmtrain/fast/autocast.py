"""Running the hand-written windows under autocast, as torch runs a matrix product there."""

from __future__ import annotations

import torch
from torch import Tensor


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """Autocast's dtype on `device_type` when autocast is on there, else None; with the per-device
    functions of torch >= 2.4 and the older per-backend ones before."""
    if hasattr(torch, "get_autocast_dtype"):
        return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    if device_type == "cuda":
        return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None
    if device_type == "cpu":
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
    return None


def apply_under_autocast(function: type[torch.autograd.Function], *tensors: Tensor):
    """``function.apply(*tensors)``, the way autocast runs a matrix product: under autocast, every floating
    input is cast to autocast's dtype (bf16, say) and the function runs with autocast off, so that its
    in-place products and ``out=`` buffers see one dtype. The casts are differentiable: the fp32 weights
    receive fp32 gradients. Used by the hand-written windows (``lstm_window``, ``gru_window``)."""
    device_type = tensors[0].device.type
    dtype = autocast_dtype(device_type)
    if dtype is None:
        return function.apply(*tensors)
    with torch.autocast(device_type, enabled=False):
        return function.apply(*(t.to(dtype) if t.is_floating_point() else t for t in tensors))
