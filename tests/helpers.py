"""What several test files share: the benchmark corpora, a tiny config, training with a recording
logger, the command line, small models and tokenizers for generation, a PNG's size, every kind of layer.

Fixtures and hooks live in conftest.py. This is a plain module on pytest's `pythonpath` (`tests`), so
`pytest` and `python -m pytest` both import it as `helpers`.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from matplotlib.image import imread
from typer.testing import CliRunner

from lmtrain.cli import app
from lmtrain.config import ModelConfig, config_from_dict
from lmtrain.data.tokenizer import EOS, UNK, CharTokenizer, WordTokenizer
from lmtrain.model import RNNLanguageModel
from lmtrain.training.trainer import train

# The benchmark corpora (tiny Shakespeare, PTB) next to the repository, laid out as lmtrain's mirror:
# `$LMTRAIN_TEST_DATA`, or `../shared/data` relative to the repository root.
SHARED_DATA = Path(
    os.environ.get("LMTRAIN_TEST_DATA") or Path(__file__).resolve().parent.parent.parent / "shared" / "data"
)

needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(),
    reason=f"benchmark corpora not found at {SHARED_DATA} (set LMTRAIN_TEST_DATA to a copy of shared/data)",
)


# ----- configs and training -------------------------------------------------------------------------


def tiny_config_dict(corpus: Path, run_dir: Path, **sections) -> dict:
    """A small word-level LSTM config on `corpus`; `sections` update individual sections."""
    config = {
        "run_dir": str(run_dir),
        "data": {"train": str(corpus / "train.txt"), "valid": str(corpus / "valid.txt"), "tokenizer": "word"},
        "model": {"cell": "lstm", "embedding_size": 16, "hidden_size": 24, "num_layers": 2, "dropout": 0.1},
        "train": {
            "batch_size": 4,
            "bptt": 10,
            "max_steps": 30,
            "eval_interval": 10,
            "lr": 0.01,
            "device": "cpu",
            "seed": 7,
        },
        "log": {"log_interval": 1, "tensorboard": False, "sample_length": 5},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            config[section].update(values)
        else:
            config[section] = values
    return config


class RecordingLogger:
    """A MetricLogger that keeps everything logged, for assertions."""

    def __init__(self):
        self.values = defaultdict(list)
        self.texts = []
        self.figures = []
        self.hparam_calls = []

    def scalars(self, step, values):
        for tag, value in values.items():
            self.values[tag].append((step, value))

    def text(self, step, tag, text):
        self.texts.append((step, tag, text))

    def figure(self, step, tag, figure):
        self.figures.append((step, tag, figure))

    def hparams(self, step, params, metrics):
        self.hparam_calls.append((step, params, metrics))

    def close(self):
        pass

    def losses(self) -> list[float]:
        return [value for _, value in self.values["train/loss"]]


def run_training(config_dict, report=lambda line: None, **kwargs):
    logger = RecordingLogger()
    result = train(config_from_dict(config_dict), report=report, show_progress=False, logger=logger, **kwargs)
    return result, logger


# ----- the command line -----------------------------------------------------------------------------

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(arg) for arg in args])


def assert_one_line_error(result, exit_code: int, *fragments: str) -> None:
    """A failure is one red line on stderr, the given exit code, and no traceback."""
    assert result.exit_code == exit_code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.output


# ----- generation: tokenizers and models ------------------------------------------------------------

WORDS = WordTokenizer([UNK, EOS, "a", "b", "c", "d", "e", "f"])  # ids 0..7
CHARS = CharTokenizer.build("ab c\n")


def crafted_model(logits: list[float]) -> RNNLanguageModel:
    """A model whose next-token logits are always `logits`."""
    config = ModelConfig(cell="lstm", embedding_size=4, hidden_size=6, num_layers=1, dropout=0.0)
    model = RNNLanguageModel(len(logits), config)
    with torch.no_grad():
        model.decoder.weight.zero_()
        model.decoder.bias.copy_(torch.tensor(logits))
    return model.eval()


def random_model(
    vocab_size: int = WORDS.vocab_size, seed: int = 0, bidirectional: bool = False
) -> RNNLanguageModel:
    torch.manual_seed(seed)
    config = ModelConfig(
        cell="lstm", embedding_size=8, hidden_size=12, num_layers=2, dropout=0.0, bidirectional=bidirectional
    )
    model = RNNLanguageModel(vocab_size, config)
    with torch.no_grad():
        model.decoder.weight.mul_(20)  # sharper distributions than the small initial weights give
    return model.eval()


@torch.no_grad()
def by_hand(model, sequence: list[int]) -> list[float]:
    """log P(s[t] | s[:t]) for t >= 1, each from its own full re-read of the prefix."""
    log_probs = []
    for t in range(1, len(sequence)):
        logits, _ = model(torch.tensor(sequence[:t]).view(-1, 1))  # [t, 1, V]
        probabilities = torch.softmax(logits[-1, 0].double(), dim=0)
        log_probs.append(math.log(float(probabilities[sequence[t]])))
    return log_probs


# ----- PNG ------------------------------------------------------------------------------------------


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels of the PNG file at `path`, after checking that it is one."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    height, width = imread(path).shape[:2]
    return width, height


# ----- layers ---------------------------------------------------------------------------------------

LAYER_KINDS = {
    "rnn": {"cell": "rnn"},
    "relu": {"cell": "rnn", "nonlinearity": "relu"},
    "gru": {"cell": "gru"},
    "gru-cudnn": {"cell": "gru", "gru_variant": "cudnn"},
    "lstm": {"cell": "lstm"},
    "esn": {"cell": "esn"},
}
"""Every layer a config can select, by a test id: its `ModelConfig` fields."""
