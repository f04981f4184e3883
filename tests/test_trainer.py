"""The training loop: loss goes down, runs are reproducible, resume is exact, failures lose nothing."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lmtrain import datasets
from lmtrain.checkpoint import load_checkpoint
from lmtrain.config import config_from_dict, load_config
from lmtrain.errors import ConfigError, DataError, TrainingError
from lmtrain.rundir import RunDirectory
from lmtrain.trainer import Trainer, train
from tests.conftest import tiny_config_dict


class RecordingLogger:
    """A MetricLogger that keeps every scalar, for assertions."""

    def __init__(self):
        self.values = defaultdict(list)
        self.texts = []

    def scalars(self, step, values):
        for tag, value in values.items():
            self.values[tag].append((step, value))

    def text(self, step, tag, text):
        self.texts.append((step, tag, text))

    def close(self):
        pass

    def losses(self) -> list[float]:
        return [value for _, value in self.values["train/loss"]]


def run_training(config_dict, **kwargs):
    logger = RecordingLogger()
    result = train(
        config_from_dict(config_dict), report=lambda line: None, show_progress=False, logger=logger, **kwargs
    )
    return result, logger


def test_loss_decreases_on_bundled_data(tmp_path):
    config = tiny_config_dict(
        tmp_path, tmp_path / "run", train={"max_steps": 80, "batch_size": 16, "bptt": 20, "eval_interval": 80}
    )
    config["data"] = {"dataset": "agreement", "tokenizer": "word"}
    result, logger = run_training(config)
    losses = logger.losses()
    assert len(losses) == 80
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.5, (first, last)
    assert result.final_valid.perplexity < result.unigram_perplexity


def test_same_seed_gives_identical_losses(tiny_corpus, tmp_path):
    _, first = run_training(tiny_config_dict(tiny_corpus, tmp_path / "a"))
    _, second = run_training(tiny_config_dict(tiny_corpus, tmp_path / "b"))
    assert first.losses() == second.losses()
    _, other_seed = run_training(tiny_config_dict(tiny_corpus, tmp_path / "c", train={"seed": 8}))
    assert other_seed.losses() != first.losses()


def test_exact_losses_with_fixed_seed(tiny_corpus, tmp_path):
    _, logger = run_training(tiny_config_dict(tiny_corpus, tmp_path / "run", train={"max_steps": 3}))
    # The first loss is close to ln(V): an untrained model spreads its probability evenly.
    assert logger.losses() == pytest.approx(PINNED_LOSSES, rel=1e-5)


PINNED_LOSSES = [5.342270851135254, 5.301642417907715, 5.283026218414307]


def test_checkpoints_written_and_load_weights_only(tiny_corpus, tmp_path):
    result, _ = run_training(tiny_config_dict(tiny_corpus, tmp_path / "run"))
    run_dir = tmp_path / "run"
    for name in ("best.pt", "last.pt"):
        checkpoint = torch.load(run_dir / name, map_location="cpu", weights_only=True)
        assert checkpoint["format"] == "lmtrain-checkpoint"
        assert {"config", "tokenizer", "model", "optimizer", "progress", "rng"} <= checkpoint.keys()
    assert torch.load(run_dir / "last.pt", weights_only=True)["progress"]["step"] == 30
    assert not (run_dir / ".lock").exists()
    resolved = load_config(run_dir / "config.yaml")
    assert resolved == config_from_dict(tiny_config_dict(tiny_corpus, tmp_path / "run"))
    assert result.steps == 30


def test_carried_state_is_detached_and_carried(tiny_corpus, tmp_path):
    config = config_from_dict(tiny_config_dict(tiny_corpus, tmp_path / "run"))
    with RunDirectory.open(config.run_dir) as run:
        trainer = Trainer(config, run, show_progress=False)
        batches = trainer.batches()
        trainer.train_step(*next(batches))
        first = trainer.carried
        assert all(t.grad_fn is None and not t.requires_grad for layer in first for t in layer)
        trainer.window += 1
        inputs, targets = next(batches)
        # The second window starts from the first one's final state: recompute it by hand.
        trainer.model.eval()
        with torch.no_grad():
            expected, _ = trainer.model(inputs, first)
            from_zero, _ = trainer.model(inputs, None)
        assert not torch.allclose(expected, from_zero)


def test_resume_reproduces_uninterrupted_run(tiny_corpus, tmp_path):
    whole, whole_log = run_training(
        tiny_config_dict(tiny_corpus, tmp_path / "whole", train={"max_steps": 20})
    )
    _, first_log = run_training(tiny_config_dict(tiny_corpus, tmp_path / "split", train={"max_steps": 10}))
    _, second_log = run_training(
        tiny_config_dict(tiny_corpus, tmp_path / "split", train={"max_steps": 20}), resume=True
    )
    assert first_log.losses() + second_log.losses() == whole_log.losses()
    whole_weights = load_checkpoint(tmp_path / "whole" / "last.pt")["model"]
    split_weights = load_checkpoint(tmp_path / "split" / "last.pt")["model"]
    for name, tensor in whole_weights.items():
        assert torch.equal(tensor, split_weights[name]), name


def test_resume_across_an_epoch_boundary(tiny_corpus, tmp_path):
    # 300 sentences of ~12 words over 4 streams and bptt 10: about 25 windows per epoch.
    steps = {"max_steps": 60, "eval_interval": 7}
    _, whole = run_training(tiny_config_dict(tiny_corpus, tmp_path / "whole", train=steps))
    _, first = run_training(
        tiny_config_dict(tiny_corpus, tmp_path / "split", train={**steps, "max_steps": 35})
    )
    _, second = run_training(tiny_config_dict(tiny_corpus, tmp_path / "split", train=steps), resume=True)
    assert first.losses() + second.losses() == whole.losses()


def test_resume_with_a_different_model_is_refused(tiny_corpus, tmp_path):
    run_training(tiny_config_dict(tiny_corpus, tmp_path / "run", train={"max_steps": 5}))
    changed = tiny_config_dict(tiny_corpus, tmp_path / "run", model={"hidden_size": 32})
    with pytest.raises(ConfigError, match="model or data config differs"):
        run_training(changed, resume=True)


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tiny_corpus, tmp_path, monkeypatch):
    run_training(tiny_config_dict(tiny_corpus, tmp_path / "run", train={"max_steps": 10}))
    before = (tmp_path / "run" / "last.pt").read_bytes()
    real_cross_entropy = F.cross_entropy

    def nan_loss(*args, **kwargs):
        return real_cross_entropy(*args, **kwargs) * float("nan")

    monkeypatch.setattr(F, "cross_entropy", nan_loss)
    with pytest.raises(TrainingError, match=r"loss became nan at step 11.*last good checkpoint"):
        run_training(tiny_config_dict(tiny_corpus, tmp_path / "run", train={"max_steps": 20}), resume=True)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


def test_corpus_too_short_names_the_minimum(tiny_corpus, tmp_path):
    config = tiny_config_dict(tiny_corpus, tmp_path / "run", train={"batch_size": 400, "bptt": 100})
    with pytest.raises(DataError, match=r"\(bptt \+ 1\) x batch_size = 40400"):
        run_training(config)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_a_config_error(tiny_corpus, tmp_path):
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        run_training(tiny_config_dict(tiny_corpus, tmp_path / "run", train={"device": "cuda"}))


def test_metrics_and_samples_are_logged(tiny_corpus, tmp_path):
    _, logger = run_training(tiny_config_dict(tiny_corpus, tmp_path / "run"))
    for tag in (
        "train/loss",
        "train/perplexity",
        "train/grad_norm",
        "train/lr",
        "valid/loss",
        "valid/perplexity",
    ):
        assert logger.values[tag], tag
    assert [step for step, _ in logger.values["valid/loss"]] == [10, 20, 30]
    assert [step for step, _, _ in logger.texts] == [10, 20, 30]


def test_char_model_reports_bits_per_char(tiny_corpus, tmp_path):
    config = tiny_config_dict(tiny_corpus, tmp_path / "run", train={"max_steps": 10})
    config["data"]["tokenizer"] = "char"
    result, logger = run_training(config)
    ((step, bpc),) = logger.values["valid/bits_per_char"]
    assert step == 10 and bpc == pytest.approx(result.final_valid.loss / 0.6931471805599453)


def test_tensorboard_events_are_written(tiny_corpus, tmp_path):
    config = tiny_config_dict(
        tiny_corpus, tmp_path / "run", train={"max_steps": 5}, log={"tensorboard": True}
    )
    train(config_from_dict(config), report=lambda line: None, show_progress=False)
    assert list((tmp_path / "run").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "configs").glob("*.yaml")), ids=str)
def test_every_shipped_config_loads_and_trains_one_step(path, tmp_path):
    """Each config validates and trains one step on a slice of its real data (cached or in the mirror).

    `data.max_tokens` cuts every split to just over one batch of windows, so the step and the final
    evaluation take well under a second even for the 650-unit models.
    """
    config = load_config(path)
    if config.data.dataset is not None:
        dataset = datasets.get_dataset(config.data.dataset)
        if not datasets.is_available(dataset, datasets.cache_dir(), datasets.data_mirror()):
            pytest.skip(
                f"{dataset.name} is neither cached nor in the test mirror (it is never downloaded here)"
            )
    slice_tokens = (config.train.bptt + 1) * config.train.batch_size + 1
    overrides = [
        f"run_dir={tmp_path / 'run'}",
        "train.max_steps=1",
        "log.tensorboard=false",
        "log.sample_length=5",
        f"data.max_tokens={slice_tokens}",
    ]
    result = train(load_config(path, overrides), report=lambda line: None, show_progress=False)
    assert result.steps == 1
