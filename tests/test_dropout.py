"""lmtrain.fast.dropout.Dropout computes nn.Dropout's function, with its own mask on the CPU."""

import math

import pytest
import torch
from torch import nn

from lmtrain.config import ModelConfig
from lmtrain.fast.dropout import Dropout, dropout_mask
from lmtrain.model import RNNLanguageModel

pytestmark = pytest.mark.fast  # tests of lmtrain.fast itself: skipped with LMTRAIN_FAST=off


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keeps_each_entry_with_probability_one_minus_p_and_scales_it(p):
    torch.manual_seed(0)
    x = torch.rand(200_000) + 0.5  # no zeros, so a zero in the output is a dropped entry
    y = Dropout(p)(x)
    kept = y != 0
    assert torch.equal(y[kept], x[kept] * (1 / (1 - p)))
    n = x.numel()
    assert abs(kept.sum().item() - n * (1 - p)) < 5 * math.sqrt(n * p * (1 - p))


def test_gradient_is_the_mask_times_the_scale():
    torch.manual_seed(1)
    x = (torch.rand(3, 4, 50) + 0.5).requires_grad_()
    y = Dropout(0.3)(x)
    upstream = torch.randn_like(y)
    y.backward(upstream)
    assert torch.equal(x.grad, upstream * (y != 0) * (1 / 0.7))


def test_masks_repeat_under_the_same_seed_and_differ_between_calls():
    x = torch.ones(10_000)
    dropout = Dropout(0.5)
    torch.manual_seed(3)
    first, second = dropout(x), dropout(x)
    torch.manual_seed(3)
    assert torch.equal(dropout(x), first)
    assert not torch.equal(first, second)


def test_identity_in_eval_mode_and_at_p_zero():
    x = torch.randn(5, 7)
    assert Dropout(0.5).eval()(x) is x
    assert Dropout(0.0)(x) is x


def test_falls_back_to_torch_where_the_fast_mask_does_not_apply():
    x = torch.ones(1000)
    assert torch.count_nonzero(Dropout(1.0)(x)) == 0
    inplace = torch.ones(1000)
    torch.manual_seed(0)
    Dropout(0.5, inplace=True)(inplace)
    assert 0 < torch.count_nonzero(inplace) < 1000  # changed in place, as nn.Dropout does


def test_mask_threshold_extremes():
    assert dropout_mask(torch.Size([1000]), 0.0).all()
    assert dropout_mask(torch.Size([2, 3]), 0.5).shape == (2, 3)


def test_bfloat16_input():
    x = torch.ones(4, 8, dtype=torch.bfloat16)
    y = Dropout(0.5)(x)
    assert y.dtype == torch.bfloat16 and set(y.unique().tolist()) <= {0.0, 2.0}


def test_the_model_uses_it_and_state_dict_is_unchanged():
    config = ModelConfig(cell="lstm", embedding_size=4, hidden_size=4, num_layers=1, dropout=0.2)
    model = RNNLanguageModel(10, config)
    assert isinstance(model.dropout, Dropout) and isinstance(model.dropout, nn.Dropout)
    assert not any(key.startswith("dropout") for key in model.state_dict())
