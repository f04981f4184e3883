"""Where training runs and where its randomness comes from: device choice, bf16 autocast, RNG states.

`device: auto` picks CUDA, then Apple's MPS, then the CPU. `precision: bf16` runs the forward pass
under `torch.autocast(dtype=torch.bfloat16)` on CUDA: the matrix products and the recurrent state
within a window run in bfloat16; the weights, the optimizer, the loss and the state carried between
windows stay in fp32, and bf16's fp32-sized exponent needs no loss scaling. On a CPU bfloat16 is
emulated and slower than fp32, so asking for it there is an error.

Checkpoints hold every tensor on the CPU, so a model trained on one device samples or resumes on
another; only the CUDA generators' states are skipped where there is no CUDA.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import partial

import torch

from lmtrain.errors import ConfigError


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str) -> torch.device:
    """`auto` -> cuda, mps or cpu, whichever comes first; a named device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA GPU is available; use train.device=cpu or auto")
    if name == "mps" and not mps_available():
        raise ConfigError(
            "train.device is 'mps' but Apple's MPS is not available; use train.device=cpu or auto"
        )
    return torch.device(name)


def autocast_factory(precision: str, device: torch.device) -> Callable[[], AbstractContextManager]:
    """A function returning the context the forward pass runs in: bf16 autocast, or nothing."""
    if precision == "fp32":
        return nullcontext
    if device.type != "cuda":
        raise ConfigError(
            f"train.precision=bf16 needs a CUDA GPU, and this run is on {device.type} (where bfloat16 is "
            "emulated and slower than fp32); use train.precision=fp32"
        )
    return partial(torch.autocast, device_type="cuda", dtype=torch.bfloat16)


COMPUTE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def state_in(state: list[tuple[torch.Tensor, ...]], dtype: torch.dtype) -> list[tuple[torch.Tensor, ...]]:
    """The recurrent state in `dtype` (the same tensors when they already are).

    Under bf16 autocast the matrix products return bfloat16, so a step mixes a bfloat16 candidate
    with the previous state; element-wise ops such as the GRU's `lerp` refuse mixed dtypes. A window
    therefore starts from its state in the compute dtype, and the state carried between windows is
    kept in fp32.
    """
    return [tuple(tensor.to(dtype) for tensor in layer) for layer in state]


def rng_states() -> dict:
    """Every global random generator training draws from (dropout, and Python's for completeness)."""
    states = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    if "torch" in states:
        torch.set_rng_state(states["torch"])
    if "python" in states:
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
