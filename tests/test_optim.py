"""Optimizers, learning-rate schedules and gradient clipping: each does what its formula says."""

from __future__ import annotations

import math

import pytest
import torch

import lmtrain.training.trainer as trainer_module
from lmtrain.checkpoint import load_checkpoint
from lmtrain.config import ClipConfig, ScheduleConfig
from lmtrain.training.optim import LearningRateSchedule, clip_gradients
from lmtrain.training.trainer import Evaluation

from helpers import run_training, tiny_config_dict


def schedule(total_steps: int = 10, lr: float = 1.0, **config) -> LearningRateSchedule:
    return LearningRateSchedule(ScheduleConfig(**config), lr, total_steps)


def test_constant_schedule_with_and_without_warmup():
    assert [schedule().lr(t) for t in (1, 5, 100)] == [1.0, 1.0, 1.0]
    warm = schedule(lr=0.8, warmup_steps=4)
    assert [warm.lr(t) for t in range(1, 7)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 0.8, 0.8])


def test_cosine_schedule_peaks_after_warmup_and_ends_at_min_lr():
    cosine = schedule(total_steps=12, lr=1.0, name="cosine", warmup_steps=2, min_lr=0.1)
    assert [cosine.lr(1), cosine.lr(2)] == pytest.approx([0.5, 1.0])
    assert cosine.lr(7) == pytest.approx(0.55)  # halfway through the decay: (lr + min_lr) / 2
    assert cosine.lr(12) == pytest.approx(0.1)
    assert cosine.lr(50) == pytest.approx(0.1)  # past the horizon it stays at min_lr
    decay = [cosine.lr(t) for t in range(2, 13)]
    assert decay == sorted(decay, reverse=True)
    for t in range(3, 12):  # min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2, p = (t - 2) / 10
        assert cosine.lr(t) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (t - 2) / 10)))


def test_plateau_divides_by_factor_when_validation_stops_improving():
    plateau = schedule(lr=1.0, name="plateau", factor=4.0)
    assert [plateau.observe(loss) for loss in (5.0, 4.0)] == [False, False]
    assert plateau.lr(3) == 1.0
    assert plateau.observe(4.5) is True  # no improvement: divide at once (patience 0)
    assert plateau.lr(4) == 0.25
    assert plateau.observe(3.0) is False  # improved on the best (4.0)
    assert plateau.observe(3.0) is True  # equal is not better
    assert plateau.lr(5) == 0.0625


def test_plateau_patience_and_floor():
    plateau = schedule(lr=1.0, name="plateau", factor=10.0, patience=1, min_lr=0.05)
    plateau.observe(2.0)
    assert plateau.observe(2.1) is False  # one bad evaluation is tolerated
    assert plateau.observe(2.2) is True
    assert plateau.lr(1) == pytest.approx(0.1)
    assert [plateau.observe(3.0), plateau.observe(3.0)] == [False, True]
    assert plateau.lr(1) == 0.05  # 0.01 would be below min_lr


def test_epoch_decay_divides_from_start_epoch_on():
    # Zaremba et al.'s PTB small: lr 1 for epochs 1-4, then halved at the start of every epoch.
    small = schedule(lr=1.0, name="epoch_decay", factor=2.0, start_epoch=5)
    assert [small.lr(100, epoch) for epoch in range(7)] == [1.0, 1.0, 1.0, 1.0, 0.5, 0.25, 0.125]
    floored = schedule(lr=1.0, name="epoch_decay", factor=10.0, start_epoch=2, min_lr=0.05)
    assert [floored.lr(1, epoch) for epoch in range(3)] == [1.0, 0.1, 0.05]


def test_schedule_state_round_trips():
    plateau = schedule(name="plateau", patience=2)
    for loss in (3.0, 2.0, 2.5, 2.6, 2.7, 2.8):
        plateau.observe(loss)
    restored = schedule(name="plateau", patience=2)
    restored.load_state_dict(plateau.state_dict())
    assert (
        restored.state_dict()
        == plateau.state_dict()
        == {
            "reductions": 1,
            "best_loss": 2.0,
            "evaluations_without_improvement": 1,
        }
    )
    assert restored.lr(1) == plateau.lr(1) == 0.25


def parameters_with_grads(*grads: list[float]) -> list[torch.nn.Parameter]:
    parameters = []
    for grad in grads:
        parameter = torch.nn.Parameter(torch.zeros(len(grad)))
        parameter.grad = torch.tensor(grad)
        parameters.append(parameter)
    return parameters


def test_clip_by_global_norm_reports_the_norm_before_clipping():
    parameters = parameters_with_grads([3.0, 0.0], [0.0, 4.0])  # global norm 5
    result = clip_gradients(parameters, ClipConfig(max_norm=1.0))
    assert result.norm == pytest.approx(5.0) and result.clipped
    assert torch.cat([p.grad for p in parameters]).tolist() == pytest.approx([0.6, 0.0, 0.0, 0.8], abs=1e-6)
    unclipped = clip_gradients(parameters_with_grads([0.3, 0.4]), ClipConfig(max_norm=1.0))
    assert unclipped.norm == pytest.approx(0.5) and not unclipped.clipped


def test_clip_by_value_then_by_norm():
    parameters = parameters_with_grads([3.0, -7.0], [1.0])
    result = clip_gradients(parameters, ClipConfig(max_norm=None, value=5.0))
    assert result.norm == pytest.approx(math.sqrt(59.0)) and result.clipped
    assert [p.grad.tolist() for p in parameters] == [[3.0, -5.0], [1.0]]
    both = parameters_with_grads([3.0, -7.0])
    result = clip_gradients(both, ClipConfig(max_norm=1.0, value=4.0))  # -> [3, -4] -> norm 1
    assert result.norm == pytest.approx(math.sqrt(58.0)) and result.clipped
    assert both[0].grad.tolist() == pytest.approx([0.6, -0.8], abs=1e-6)
    off = parameters_with_grads([30.0])
    result = clip_gradients(off, ClipConfig(max_norm=None, value=None))
    assert (result.norm, result.clipped, off[0].grad.tolist()) == (30.0, False, [30.0])


@pytest.mark.parametrize(
    ("optimizer", "momentum", "expected_type"),
    [("sgd", 0.9, torch.optim.SGD), ("adam", 0.0, torch.optim.Adam), ("adamw", 0.0, torch.optim.AdamW)],
)
def test_each_optimizer_follows_the_warmup_cosine_schedule(
    optimizer, momentum, expected_type, tiny_corpus, tmp_path, monkeypatch
):
    built = []
    real_build = trainer_module.build_optimizer
    monkeypatch.setattr(
        trainer_module, "build_optimizer", lambda *a: built.append(real_build(*a)) or built[-1]
    )
    train = {
        "optimizer": optimizer,
        "momentum": momentum,
        "lr": 0.05,
        "max_steps": 8,
        "eval_interval": 8,
        "schedule": {"name": "cosine", "warmup_steps": 3, "min_lr": 0.01},
    }
    config = tiny_config_dict(tiny_corpus, tmp_path / "run", train=train, log={"sample_length": 0})
    _, logger = run_training(config)
    expected = schedule(total_steps=8, lr=0.05, name="cosine", warmup_steps=3, min_lr=0.01)
    logged = logger.values["train/lr"]
    assert [step for step, _ in logged] == list(range(1, 9))
    assert [lr for _, lr in logged] == pytest.approx([expected.lr(t) for t in range(1, 9)])
    assert type(built[0]) is expected_type
    group = load_checkpoint(tmp_path / "run" / "last.pt")["optimizer"]["param_groups"][0]
    assert group["lr"] == pytest.approx(0.01)  # what the optimizer used for its last step
    if optimizer == "sgd":
        assert group["momentum"] == 0.9


def test_plateau_schedule_in_training(tiny_corpus, tmp_path, monkeypatch):
    losses = iter([3.0, 2.5, 2.7, 2.6, 2.0, 2.0])
    monkeypatch.setattr(trainer_module, "evaluate", lambda *a, **k: Evaluation(loss=next(losses), tokens=1))
    train = {
        "optimizer": "sgd",
        "lr": 1.0,
        "max_steps": 12,
        "eval_interval": 2,
        "schedule": {"name": "plateau"},
    }
    config = tiny_config_dict(tiny_corpus, tmp_path / "run", train=train, log={"sample_length": 0})
    lines = []
    _, logger = run_training(config, report=lines.append)
    # Evaluations after steps 2, 4, ..., 12 see 3.0, 2.5, 2.7 (worse: /4), 2.6 (worse than 2.5: /4),
    # 2.0, 2.0 (not better: /4).
    lrs = dict(logger.values["train/lr"])
    assert [lrs[t] for t in (1, 2, 5, 6, 7, 8, 9, 10, 11, 12)] == [
        1,
        1,
        1,
        1,
        0.25,
        0.25,
        0.0625,
        0.0625,
        0.0625,
        0.0625,
    ]
    assert sum("validation stopped improving: learning rate now 0.25" in line for line in lines) == 1


def test_epoch_decay_in_training_follows_the_epochs(tiny_corpus, tmp_path):
    train = {
        "batch_size": 32,  # 2933 tokens / 32 streams: 91 rows, 9 windows of 10 per epoch
        "epochs": 3,
        "max_steps": None,
        "eval_interval": 100,
        "schedule": {"name": "epoch_decay", "factor": 2.0, "start_epoch": 2},
    }
    config = tiny_config_dict(tiny_corpus, tmp_path / "run", train=train, log={"sample_length": 0})
    _, logger = run_training(config)
    assert [lr for _, lr in logger.values["train/lr"]] == [0.01] * 9 + [0.005] * 9 + [0.0025] * 9
