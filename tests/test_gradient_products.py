"""The two products of a linear map's backward (`lmtrain.fast.weight_gradient`): each layout it picks for
MKL's sake computes the plain product, and the windows that use them still match torch's modules."""

import pytest
import torch
from torch.testing import assert_close

from lmtrain.fast.weight_gradient import (
    input_gradient,
    padded_width,
    padding_pays,
    pads_input_gradient,
    weight_gradient,
    with_zero_columns,
)
from lmtrain.model.cells import GRULayer, LSTMLayer

from fast_helpers import assert_window_matches_cell_loop

pytestmark = pytest.mark.fast  # tests of lmtrain.fast itself: skipped with LMTRAIN_FAST=off


@pytest.mark.parametrize("in_features, out_features", [(32, 64), (24, 40), (650, 40), (30, 48)])
def test_weight_gradient_is_the_sum_of_the_parts_products(in_features, out_features):
    """All three forms, with two parts: direct where rows are whole vectors (32, 24), on x padded to whole
    cache lines where that adds at most 2.5% columns (650), transposed elsewhere (30)."""
    generator = torch.Generator().manual_seed(0)
    x1, x2 = (
        torch.randn(50, in_features, generator=generator),
        torch.randn(3, in_features, generator=generator),
    )
    dz1, dz2 = (
        torch.randn(50, out_features, generator=generator),
        torch.randn(3, out_features, generator=generator),
    )
    expected = dz1.t() @ x1 + dz2.t() @ x2
    gradient = weight_gradient((x1, dz1), (x2, dz2))
    assert gradient.shape == (out_features, in_features) and gradient.is_contiguous()
    assert_close(gradient, expected, rtol=1e-5, atol=1e-4)


def test_rows_are_padded_only_where_it_was_measured_to_pay():
    assert padding_pays(650) and padding_pays(300) and padding_pays(1500)
    assert not padding_pays(1024) and not padding_pays(200)  # whole vectors already
    assert not padding_pays(100) and not padding_pays(30)  # 12% and 7% more columns


def test_with_zero_columns_copies_and_widens():
    matrix = torch.randn(3, 5)
    wide = with_zero_columns(matrix, 16)
    assert wide.shape == (3, 16) and torch.equal(wide[:, :5], matrix) and not wide[:, 5:].any()


def test_weight_gradient_leaves_other_dtypes_unpadded():
    x, dz = torch.randn(20, 650, dtype=torch.float64), torch.randn(20, 40, dtype=torch.float64)
    assert_close(weight_gradient((x, dz)), dz.t() @ x)


def test_the_input_gradient_is_padded_only_where_it_was_measured_to_pay():
    assert padded_width(650) == 656 and padded_width(1024) == 1024
    assert (
        pads_input_gradient(4096, 650) and pads_input_gradient(2240, 1500) and pads_input_gradient(1024, 330)
    )
    assert not pads_input_gradient(4096, 1024)  # rows already whole cache lines
    assert not pads_input_gradient(4096, 200)  # half cache lines: measured as fast
    assert not pads_input_gradient(700, 650)  # the word model's 700 tokens: no gain measured
    assert not pads_input_gradient(4096, 100)  # 112 columns for 100: 12% more work


@pytest.mark.parametrize("rows, in_features", [(1024, 330), (1100, 650), (64, 330), (1024, 96)])
def test_input_gradient_is_the_plain_product(rows, in_features):
    generator = torch.Generator().manual_seed(1)
    dz = torch.randn(rows, 24, generator=generator)
    weight = torch.randn(24, in_features, generator=generator)
    gradient = input_gradient(dz, weight)
    assert gradient.shape == (rows, in_features) and gradient.is_contiguous()
    assert_close(gradient, dz @ weight, rtol=1e-5, atol=1e-4)


def test_input_gradient_leaves_other_dtypes_to_torch():
    dz, weight = torch.randn(1024, 8, dtype=torch.float64), torch.randn(8, 330, dtype=torch.float64)
    assert torch.equal(input_gradient(dz, weight), dz @ weight)


@pytest.mark.parametrize("layer_class", [LSTMLayer, GRULayer])
def test_a_window_whose_products_are_padded_matches_the_cell_loop(layer_class):
    """T * B = 1,024 rows of E = 330 inputs: the fused window's dx and dW_ax go through the padded products;
    the reference is autograd through the layer's step-by-step `_cell` loop (`_run_reference`)."""
    torch.manual_seed(2)
    layer = layer_class(330, 16)
    x = torch.randn(8, 128, 330, requires_grad=True)
    assert pads_input_gradient(8 * 128, 330) and padding_pays(330)
    assert_window_matches_cell_loop(layer, x, layer.initial_state(128), rtol=1e-4, atol=1e-4)
