"""What happens to the gradients and the learning rate at every step: optimizer, schedule, clipping.

The schedule is a plain function of the step number (plus, for `plateau`, a little state updated
after each evaluation), and the trainer writes its value into the optimizer before every step. That
keeps three things simple: the variable-length windows' lr scaling (multiply, don't fight a torch
scheduler), exact resume (the state is three numbers in the checkpoint), and the tests (the lr of
step t is a formula).

    constant   lr
    cosine     min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2,   p = (t - warmup) / (total - warmup)
    plateau    lr / factor**k, k = how many times validation loss failed to improve for
               `patience` + 1 evaluations in a row (PyTorch's word_language_model divides by 4 at
               every evaluation that does not improve: factor 4, patience 0); never below min_lr
    epoch_decay  lr / factor**max(0, e - start_epoch + 1) in epoch e = 1, 2, ... (Zaremba et al. 2014:
               PTB small halves it from epoch 5 on, medium divides by 1.2 from epoch 7); never below min_lr

Every schedule starts with `warmup_steps` of linear warmup: step t <= warmup gets lr * t / warmup.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from lmtrain.config import ClipConfig, ScheduleConfig, TrainConfig


def build_optimizer(model: torch.nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    """SGD (with optional momentum), Adam or AdamW over every parameter of `model`."""
    if train.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay
        )
    if train.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class LearningRateSchedule:
    """The learning rate of every step (1-based) of a run of about `total_steps` steps."""

    def __init__(self, config: ScheduleConfig, lr: float, total_steps: int):
        self.config = config
        self.peak = lr
        self.total_steps = max(total_steps, 1)
        # plateau's state: how far the lr has been divided, and how validation loss has gone.
        self.reductions = 0
        self.best_loss = math.inf
        self.evaluations_without_improvement = 0

    def lr(self, step: int, epoch: int = 0) -> float:
        """The lr of optimizer step `step` (1-based), taken in epoch `epoch` (0-based)."""
        config = self.config
        if step <= config.warmup_steps:
            return self.peak * step / config.warmup_steps
        if config.name == "cosine":
            span = max(self.total_steps - config.warmup_steps, 1)
            progress = min((step - config.warmup_steps) / span, 1.0)
            return config.min_lr + (self.peak - config.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if config.name == "plateau":
            return max(self.peak / config.factor**self.reductions, config.min_lr)
        if config.name == "epoch_decay":
            divisions = max(0, epoch + 1 - config.start_epoch + 1)
            return max(self.peak / config.factor**divisions, config.min_lr)
        return self.peak

    def observe(self, valid_loss: float) -> bool:
        """Take an evaluation into account; True when the lr has just been divided (plateau only)."""
        if valid_loss < self.best_loss:
            self.best_loss = valid_loss
            self.evaluations_without_improvement = 0
            return False
        self.evaluations_without_improvement += 1
        if self.config.name != "plateau" or self.evaluations_without_improvement <= self.config.patience:
            return False
        self.evaluations_without_improvement = 0
        self.reductions += 1
        return True

    def state_dict(self) -> dict:
        return {
            "reductions": self.reductions,
            "best_loss": self.best_loss,
            "evaluations_without_improvement": self.evaluations_without_improvement,
        }

    def load_state_dict(self, state: dict) -> None:
        self.reductions = state["reductions"]
        self.best_loss = state["best_loss"]
        self.evaluations_without_improvement = state["evaluations_without_improvement"]


@dataclass
class ClipResult:
    norm: float
    """The global L2 norm of all gradients before any clipping."""
    clipped: bool
    """Whether clipping changed any gradient."""


def clip_gradients(parameters: Iterable[torch.nn.Parameter], config: ClipConfig) -> ClipResult:
    """Clip by value (each element to ±value), then by global norm, as `config` says.

    Returns the norm measured before clipping, which is what to log: after clipping it is at most
    `max_norm` and says nothing about exploding gradients.
    """
    with_grads = [p for p in parameters if p.grad is not None]
    if config.value is None:
        # One pass: clip_grad_norm_ returns the norm it measured before rescaling.
        max_norm = config.max_norm if config.max_norm is not None else math.inf
        norm = float(torch.nn.utils.clip_grad_norm_(with_grads, max_norm))
        return ClipResult(norm, norm > max_norm)
    norm = float(torch.nn.utils.clip_grad_norm_(with_grads, math.inf))
    largest = max(float(p.grad.abs().max()) for p in with_grads)
    torch.nn.utils.clip_grad_value_(with_grads, config.value)
    clipped = largest > config.value
    if config.max_norm is not None:
        clipped |= float(torch.nn.utils.clip_grad_norm_(with_grads, config.max_norm)) > config.max_norm
    return ClipResult(norm, clipped)
