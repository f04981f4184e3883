"""`model.impl: auto` times its candidate backends on the first window and keeps the faster (an injected
clock stands in for time), leaves no trace in the run's random state, and a resumed run keeps the choice."""

from __future__ import annotations

import pytest
import torch

from lmtrain.checkpoint import load_checkpoint
from lmtrain.config import ModelConfig, config_from_dict
from lmtrain.model import RNNLanguageModel
from lmtrain.model.backends import fast_layer
from lmtrain.training import backend_trial
from lmtrain.training.backend_trial import choose_backend, window_multiply_adds
from lmtrain.training.rundir import RunDirectory
from lmtrain.training.trainer import Trainer, train

from helpers import tiny_config_dict

needs_fast_layer = pytest.mark.skipif(not fast_layer(), reason="auto: one candidate only")


class Clock:
    """A clock whose every second reading (the end of a timed pass) has advanced by the cost of the
    backend the model's layers run on."""

    def __init__(self, model: RNNLanguageModel, costs: dict[str, float]):
        self.model, self.costs, self.now, self.readings = model, costs, 0.0, 0

    def __call__(self) -> float:
        self.readings += 1
        if self.readings % 2 == 0:
            self.now += self.costs[self.model.layers[0].preferred_backend]
        return self.now


def lstm(**options) -> RNNLanguageModel:
    torch.manual_seed(0)
    config = ModelConfig(cell="lstm", embedding_size=8, hidden_size=8, num_layers=2, dropout=0.3, **options)
    return RNNLanguageModel(20, config)


def esn() -> RNNLanguageModel:
    return RNNLanguageModel(20, ModelConfig(cell="esn", embedding_size=8, hidden_size=8, num_layers=1))


def window_loss(model: RNNLanguageModel):
    tokens = torch.randint(20, (6, 3))
    return lambda: model.language_model_loss(tokens, tokens.roll(1, 0))[0]


@needs_fast_layer
@pytest.mark.parametrize("faster", ["native", "fused"])
def test_the_faster_backend_is_kept(faster, monkeypatch):
    monkeypatch.setattr(backend_trial, "MIN_MULTIPLY_ADDS", 0)
    model = lstm()
    assert model.backend_candidates() == ["native", "fused"]
    slower = "fused" if faster == "native" else "native"
    clock = Clock(model, {faster: 1.0, slower: 1.5})
    result = choose_backend(model, window_loss(model), 6, 3, clock=clock)
    assert result.backend == faster
    assert result.seconds == {faster: 1.0, slower: 1.5}
    assert clock.readings == 2 * 2 * backend_trial.REPEATS  # each timed pass read twice; warm-ups not
    assert {layer.preferred_backend for layer in model.recurrent_layers()} == {faster}
    assert all(layer.backend(torch.zeros(1, 1, 8)) == faster for layer in model.layers)
    assert "model.impl auto: " + faster in result.describe()


@needs_fast_layer
def test_the_trial_leaves_the_random_state_and_gradients_alone(monkeypatch):
    monkeypatch.setattr(backend_trial, "MIN_MULTIPLY_ADDS", 0)
    model = lstm()
    run = window_loss(model)
    before = torch.get_rng_state()
    choose_backend(model, run, 6, 3, clock=Clock(model, {"native": 1.0, "fused": 2.0}))
    assert torch.equal(torch.get_rng_state(), before)
    assert all(parameter.grad is None for parameter in model.parameters())


def test_no_trial_without_a_choice_or_below_the_size_that_matters(monkeypatch):
    model = lstm()
    assert window_multiply_adds(model, 6, 3) == 6 * 3 * 2 * (4 * 8 * (8 + 8))
    assert choose_backend(model, window_loss(model), 6, 3) is None  # tiny: the rule's first candidate
    monkeypatch.setattr(backend_trial, "MIN_MULTIPLY_ADDS", 0)
    for single in (lstm(impl="native"), lstm(impl="fused"), esn()):
        assert choose_backend(single, window_loss(single), 6, 3) is None
        assert {layer.preferred_backend for layer in single.layers} == {None}


@needs_fast_layer
def test_a_run_records_the_choice_and_a_resumed_run_keeps_it(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(backend_trial, "MIN_MULTIPLY_ADDS", 0)

    def fused_wins(model, run_window, steps, batch):
        clock = Clock(model, {"native": 2.0, "fused": 1.0})
        return choose_backend(model, run_window, steps, batch, clock=clock)

    monkeypatch.setattr("lmtrain.training.trainer.choose_backend", fused_wins)
    lines = []
    config = config_from_dict(tiny_config_dict(tiny_corpus, tmp_path / "run", train={"max_steps": 4}))
    train(config, report=lines.append, show_progress=False)
    assert any(line.startswith("model.impl auto: fused backend") for line in lines)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["progress"]["backend"] == "fused"

    longer = config.model_copy(update={"train": config.train.model_copy(update={"max_steps": 6})})
    resumed = Trainer(longer, RunDirectory(tmp_path / "run"), show_progress=False)
    resumed.resume_from(tmp_path / "run" / "last.pt")
    assert {layer.preferred_backend for layer in resumed.model.layers} == {"fused"}
    resumed.try_backends()  # a resumed run does not time again
    assert resumed.backend == "fused"
