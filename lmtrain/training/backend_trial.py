"""``model.impl: auto`` where two backends compute the layers' function: time both, keep the faster.

On a CPU an LSTM can run on torch's ``nn.LSTM`` (oneDNN) or on lmtrain's fused window, and which is faster
depends on the CPU and the shapes (``lmtrain.model.backends``). Like ``torch.backends.cudnn.benchmark``,
the trainer measures instead of guessing: before the first step of a fresh run it times one training
window's forward and backward pass on each candidate, interleaved, and runs the whole training on the
faster. The trial leaves no trace: the random generators are restored (dropout masks, random initial
states) and the gradients cleared, so the run's numbers depend on the trial only through the backend it
picks, which the checkpoint records for a resumed run.

Models too small for the choice to matter (under ``MIN_MULTIPLY_ADDS`` per window) skip the trial and take
the rule's first candidate, so that tiny runs stay deterministic and start at once.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lmtrain.model import RNNLanguageModel

MIN_MULTIPLY_ADDS = 1 << 24
"""A window's recurrent multiply-adds below which the trial is skipped: at 16M the forward and backward take
about a millisecond on a laptop core, less than the backends' difference could be told from noise."""

REPEATS = 3
"""Timed passes per candidate (after one warm-up pass each); the median counts."""


@dataclass(frozen=True)
class TrialResult:
    """The backend chosen and each candidate's median seconds per forward + backward pass."""

    backend: str
    seconds: dict[str, float]

    def describe(self) -> str:
        timings = ", ".join(f"{name} {seconds * 1e3:.1f} ms" for name, seconds in self.seconds.items())
        return f"model.impl auto: {self.backend} backend (one window's forward + backward: {timings})"


def window_multiply_adds(model: RNNLanguageModel, steps: int, batch: int) -> int:
    """The recurrent layers' multiply-adds of one window's forward pass, ``T B sum(G H (input + H))``."""
    return steps * batch * sum(
        layer.num_gates * layer.hidden_size * (layer.input_size + layer.hidden_size)
        for layer in model.recurrent_layers()
    )


def choose_backend(
    model: RNNLanguageModel,
    run_window: Callable[[], torch.Tensor],
    steps: int,
    batch: int,
    clock: Callable[[], float] = time.perf_counter,
) -> TrialResult | None:
    """Time ``run_window`` (a training window's loss, on the model) forward and backward on each backend
    ``auto`` may choose for ``model``, set the faster with ``model.prefer_backend`` and return it; None
    where there is nothing to choose or the model is too small for a trial (see the module)."""
    candidates = model.backend_candidates()
    if len(candidates) < 2 or window_multiply_adds(model, steps, batch) < MIN_MULTIPLY_ADDS:
        return None
    seconds: dict[str, list[float]] = {name: [] for name in candidates}
    with torch.random.fork_rng(devices=[]):
        for repeat in range(REPEATS + 1):
            order = candidates if repeat % 2 == 0 else candidates[::-1]
            for name in order:
                model.prefer_backend(name)
                if repeat == 0:  # the first pass of each warms up (caches, kernels built): not timed
                    run_window().backward()
                    continue
                started = clock()
                run_window().backward()
                seconds[name].append(clock() - started)
    model.zero_grad(set_to_none=True)
    medians = {name: statistics.median(times) for name, times in seconds.items()}
    best = min(candidates, key=lambda name: medians[name])  # a tie keeps the rule's order
    model.prefer_backend(best)
    return TrialResult(best, medians)
