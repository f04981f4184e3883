"""How a recurrent layer runs: one definition per cell, several exact backends, and the rule that picks one.

Each cell defines its function once, in plain torch, from the notes' equations: ``_cell``, one time step.
That loop, differentiated by autograd, is the **reference**: what a learner reads, and what every other
backend is tested against. The others compute the same function faster:

    backend    what runs a window                                              for
    reference  the cell's ``_cell`` loop, autograd through it                  every cell, every device
    native     torch's nn.RNN / nn.LSTM / nn.GRU (oneDNN on a CPU, cuDNN on    cells with a ``native_type``:
               CUDA), fed with the layer's own parameters                      rnn, lstm, gru (cudnn variant)
    fused      lmtrain's fast layer (``lmtrain.fast``): hand-written backward  the cells it registers
               passes through time, C kernels for the gate arithmetic         (lstm, both grus)

``model.impl`` picks the backend for every layer. ``auto`` (the default) chooses among the backends that
compute the layer's function on its device (``auto_candidates``), in this order of preference:

1. ``native`` where the cell has a torch counterpart, except under autocast on a CPU (oneDNN has no
   bfloat16 LSTM on most CPUs);
2. ``fused`` where the fast layer has a window for the cell, on a CPU (on CUDA it only competes where no
   native kernel exists: cuDNN runs a whole window in one call, the fused window launches per step);
3. ``reference`` where neither applies (the echo state network, every cell with the fast layer off).

Which of native and fused is faster on a CPU depends on the CPU and the shapes (oneDNN's LSTM is strong on
AVX-512 and at large windows; the fused window at small ones), so where both apply the trainer times them
on the run's first window and keeps the faster (``lmtrain.training.backend_trial``, the way
``torch.backends.cudnn.benchmark`` picks a convolution algorithm); ``preferred_backend`` holds the choice,
and the checkpoint records it so that a resumed run continues on the same one. Without a trial (tiny
models, several processes, evaluation and sampling) ``auto`` takes the first candidate.

``fused`` asked for explicitly runs the fast layer's window where it has one and the reference elsewhere;
``custom`` is another name for it. The backend never changes the parameters, so checkpoints do
not depend on it.

The fast layer is optional, and no module of the core imports it: ``fast_layer()`` loads it by name on
first use unless ``LMTRAIN_FAST=off``, and it fills the registries below (``lmtrain.fast.register``).
With it off, or where it cannot load, every layer runs on ``native`` or ``reference`` and generation runs
in torch.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from lmtrain.errors import LmtrainError

IMPLS = ("auto", "reference", "native", "fused", "custom")
"""The values of ``model.impl``; ``custom`` is another name for ``fused``."""

BACKENDS = ("reference", "native", "fused")
"""What actually runs a window (``auto`` resolves to one of these per layer)."""

FAST_LAYER_MODULE = "lmtrain.fast"
"""The optional subpackage that registers the ``fused`` backend and the fast generation steps."""

State = tuple[Tensor, ...]
"""A layer's recurrent state: ``(a,)`` for rnn, gru and esn, ``(a, c)`` for lstm, each ``[B, H]``."""

Step = Callable[[Tensor, State], tuple[Tensor, State]]
"""One time step, ``(x_t, state) -> (y_t, state)``; see ``RecurrentLayer.inference_step``."""

WindowFunction = Callable[[nn.Module, Tensor, State], tuple[Tensor, State]]
"""``run(layer, x [T, B, input_size], state) -> (y [T, B, H], state)``: a fused window of one cell class."""

StepFactory = Callable[[nn.Module, Tensor | None], Step | None]
"""``make(layer, embedding) -> step`` for generation (see ``RecurrentLayer.inference_step``), or None where
the fast step does not apply (the reference step then runs)."""

FUSED_WINDOWS: dict[type, WindowFunction] = {}
"""The fast layer's window of each cell class it covers (exact class: a subclass is a different function)."""

GENERATION_STEPS: dict[type, StepFactory] = {}
"""The fast layer's generation step of each cell class it covers."""

FAST_OPERATIONS: dict[str, Any] = {}
"""The fast layer's other pieces, by role: ``dropout`` (a drop-in ``nn.Dropout`` subclass),
``generation_linear`` (``(weight, bias) -> x -> x W^T + b`` for a few rows),
``generation_loop`` (``(model, streams) -> loop or None``, see ``lmtrain.generation.sampling``) and
``draw_tokens`` (``(probs, uniforms) -> tokens or None``)."""


class BackendError(LmtrainError):
    """A backend was asked for where it cannot run."""


def fast_layer_mode() -> str:
    """``LMTRAIN_FAST``: ``auto`` (default: load the fast layer when it imports) or ``off``."""
    mode = os.environ.get("LMTRAIN_FAST", "auto").strip().lower() or "auto"
    if mode not in ("auto", "off"):
        raise LmtrainError(f"LMTRAIN_FAST={mode!r} is not one of auto, off; unset it or pick one")
    return mode


@functools.cache
def fast_layer() -> bool:
    """Whether the fast layer is loaded; loads it (once per process) unless ``LMTRAIN_FAST=off``."""
    if fast_layer_mode() == "off":
        return False
    try:
        module = importlib.import_module(FAST_LAYER_MODULE)
    except ImportError:
        return False
    module.register()
    return True


def fast_operation(role: str) -> Any | None:
    """The fast layer's piece for ``role`` (see ``FAST_OPERATIONS``), or None without the fast layer."""
    return FAST_OPERATIONS.get(role) if fast_layer() else None


def dropout_class(impl: str) -> type[nn.Dropout]:
    """The class of the model's dropout: the fast layer's drop-in subclass of ``nn.Dropout`` (same
    arguments and state dict), unless ``impl`` is ``reference`` or the fast layer is off."""
    fast = fast_operation("dropout") if impl != "reference" else None
    return fast or nn.Dropout


def auto_candidates(layer: nn.Module, x: Tensor) -> list[str]:
    """The backends ``auto`` chooses between for ``layer`` on windows like ``x``, in order of preference."""
    found = []
    on_cpu = x.device.type == "cpu"
    if layer.native_type is not None and not (on_cpu and cpu_autocast_enabled()):
        found.append("native")
    if fused_window(layer) is not None and (on_cpu or not found):
        found.append("fused")
    return found or ["reference"]


def resolve_backend(layer: nn.Module, x: Tensor) -> str:
    """The backend that runs ``layer`` on ``x`` under the layer's ``impl`` (see the module's rule)."""
    impl = layer.impl
    if impl in ("native", "reference"):
        return impl
    if impl in ("fused", "custom"):
        return "fused" if fused_window(layer) is not None else "reference"
    candidates = auto_candidates(layer, x)
    preferred = layer.preferred_backend
    return preferred if preferred in candidates else candidates[0]


def cpu_autocast_enabled() -> bool:
    """Whether autocast is on for CPU tensors (the per-device call of torch >= 2.4, the older one before)."""
    if hasattr(torch, "get_autocast_dtype"):
        return torch.is_autocast_enabled("cpu")
    return torch.is_autocast_cpu_enabled()


def fused_window(layer: nn.Module) -> WindowFunction | None:
    """The fast layer's window for this layer's exact class, or None."""
    return FUSED_WINDOWS.get(type(layer)) if fast_layer() else None


def generation_step(layer: nn.Module, embedding: Tensor | None) -> Step | None:
    """The fast layer's generation step for this layer, or None (then the reference step runs)."""
    if layer.impl == "reference" or not fast_layer():
        return None
    make = GENERATION_STEPS.get(type(layer))
    return None if make is None else make(layer, embedding)
