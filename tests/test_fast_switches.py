"""`LMTRAIN_FAST_OFF` turns single pieces of the fast layer off (for measuring what each gains), and the
results stay those of the pieces it replaces."""

import os
import subprocess
import sys

import pytest
import torch
from torch.testing import assert_close

from lmtrain.errors import LmtrainError
from lmtrain.fast import switches, weight_gradient
from lmtrain.fast.kernels.panel_product import panel_product_available
from lmtrain.fast.step_product import StepProduct

pytestmark = pytest.mark.fast  # tests of lmtrain.fast itself: skipped with LMTRAIN_FAST=off


@pytest.fixture
def fast_off(monkeypatch):
    """Set `LMTRAIN_FAST_OFF` for the test (the cached reading is cleared before and after)."""

    def turn_off(pieces: str) -> None:
        monkeypatch.setenv("LMTRAIN_FAST_OFF", pieces)
        switches.piece_off.cache_clear()

    yield turn_off
    switches.piece_off.cache_clear()


@pytest.mark.skipif(not panel_product_available(), reason="the C kernels are not built here")
def test_panels_off_sends_the_step_products_to_addmm(fast_off, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    weight = torch.randn(1024, 256)
    on = StepProduct(weight, 20).backend
    fast_off("panels")
    assert StepProduct(weight, 20).backend == "addmm"
    assert on in ("panels", "addmm")


def test_gradient_forms_off_gives_the_same_gradients_the_plain_way(fast_off):
    generator = torch.Generator().manual_seed(0)
    x, dz = torch.randn(1100, 650, generator=generator), torch.randn(1100, 96, generator=generator)
    weight = torch.randn(96, 650, generator=generator)
    tuned = weight_gradient.weight_gradient((x, dz)), weight_gradient.input_gradient(dz, weight)
    fast_off("gradient_forms")
    plain = weight_gradient.weight_gradient((x, dz)), weight_gradient.input_gradient(dz, weight)
    for got, expected in zip(plain, tuned, strict=True):
        assert_close(got, expected, rtol=1e-4, atol=1e-3)
    assert_close(plain[0], dz.t() @ x, rtol=1e-4, atol=1e-3)


def test_dropout_off_builds_nn_dropout_and_unknown_pieces_are_refused(fast_off):
    probe = (
        "from torch import nn\n"
        "from lmtrain.config import ModelConfig\n"
        "from lmtrain.model import RNNLanguageModel\n"
        "config = ModelConfig(cell='lstm', embedding_size=4, hidden_size=4, dropout=0.2)\n"
        "model = RNNLanguageModel(5, config)\n"
        "print(type(model.dropout).__module__)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "LMTRAIN_FAST_OFF": "dropout"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.strip() == "torch.nn.modules.dropout"
    fast_off("panels,dropuot")
    with pytest.raises(LmtrainError, match="LMTRAIN_FAST_OFF names dropuot; the pieces are: panels, "):
        switches.piece_off("panels")
