"""The windows' large products on oneDNN (`lmtrain.fast.onednn_linear`): the same products as torch's, chosen
where they were measured to pay, and the LSTM and GRU windows that use them still match their cell loops."""

import pytest
import torch
from torch.testing import assert_close

from lmtrain.fast import onednn_linear
from lmtrain.fast.onednn_linear import (
    input_gradient_on_onednn,
    input_projection,
    laid_out_for_onednn,
    linear_on_onednn,
    onednn_available,
    projection_on_onednn,
    weight_gradients,
    weight_gradients_on_onednn,
)
from lmtrain.fast.weight_gradient import input_gradient
from lmtrain.model.cells import GRULayer, LSTMLayer

from fast_helpers import assert_window_matches_cell_loop

pytestmark = pytest.mark.fast  # tests of lmtrain.fast itself: skipped with LMTRAIN_FAST=off

needs_onednn = pytest.mark.skipif(not onednn_available(), reason="this torch has no oneDNN linear operators")


@pytest.fixture(autouse=True)
def _an_avx512_amd_cpu(monkeypatch):
    """The rules as on the CPU they were measured on, whatever CPU runs the tests."""
    monkeypatch.setattr(onednn_linear, "onednn_outpaces_mkl", lambda: True)


def _rows_and_weight(rows: int, out_features: int, in_features: int, dtype=torch.float32):
    generator = torch.Generator().manual_seed(rows + out_features + in_features)
    x = torch.randn(rows, in_features, generator=generator, dtype=dtype)
    weight = torch.randn(out_features, in_features, generator=generator, dtype=dtype)
    return x, weight


@needs_onednn
@pytest.mark.parametrize("rows, out_features, in_features", [(40, 24, 16), (37, 52, 13), (300, 1040, 650)])
def test_linear_on_onednn_is_the_plain_product(rows, out_features, in_features):
    x, weight = _rows_and_weight(rows, out_features, in_features)
    bias = torch.randn(out_features)
    laid_out = laid_out_for_onednn(weight, rows)
    for form in (weight, laid_out, weight.t().contiguous().t()):  # plain, blocked, a transposed view
        assert_close(linear_on_onednn(x, form, bias), torch.addmm(bias, x, weight.t()), rtol=1e-5, atol=1e-4)
        assert_close(linear_on_onednn(x, form), x @ weight.t(), rtol=1e-5, atol=1e-4)


@needs_onednn
def test_the_products_go_to_onednn_only_where_they_were_measured_to_pay():
    def projection(rows, out_features, in_features):
        return projection_on_onednn(torch.empty(rows, in_features), torch.empty(out_features, in_features))

    def gradient(rows, out_features, in_features):
        dz, weight = torch.empty(rows, out_features), torch.empty(out_features, in_features)
        return input_gradient_on_onednn(dz, weight)

    assert projection(2048, 512, 128) and projection(700, 2600, 650) and projection(4096, 4096, 1024)
    assert projection(700, 1024, 256)
    assert not projection(1280, 512, 128)  # too few multiply-adds
    assert gradient(700, 2600, 650) and gradient(640, 1024, 256) and gradient(4096, 4096, 1024)
    assert not gradient(640, 512, 128)  # too few multiply-adds
    assert weight_gradients_on_onednn(torch.empty(700, 2600), 650)  # the word model's layer
    assert weight_gradients_on_onednn(torch.empty(4096, 4096), 1024)
    assert not weight_gradients_on_onednn(torch.empty(4096, 1024), 256)  # too narrow
    assert not weight_gradients_on_onednn(torch.empty(6400, 4096), 1024)  # the copy of dz^T: too much memory
    assert not weight_gradients_on_onednn(torch.empty(100, 2048), 512)  # too few multiply-adds
    float64 = torch.empty(4096, 4096, dtype=torch.float64), torch.empty(4096, 1024, dtype=torch.float64)
    assert not input_gradient_on_onednn(*float64) and not projection_on_onednn(float64[1], float64[0].t())


def test_without_onednn_the_products_stay_on_torch(monkeypatch):
    monkeypatch.setattr(onednn_linear, "onednn_available", lambda: False)  # a torch built without oneDNN
    x, weight = _rows_and_weight(4096, 512, 128)
    assert not projection_on_onednn(x, weight)
    assert not input_gradient_on_onednn(torch.empty(4096, 1024), torch.empty(1024, 512))
    assert not weight_gradients_on_onednn(torch.empty(700, 2600), 650)
    bias = torch.randn(512)
    assert torch.equal(input_projection(x, weight, bias), torch.addmm(bias, x, weight.t()))


@needs_onednn
def test_weight_gradients_on_onednn_are_the_plain_products():
    generator = torch.Generator().manual_seed(4)
    dz = torch.randn(70, 52, generator=generator)
    inputs = torch.randn(70, 13, generator=generator), torch.randn(70, 20, generator=generator)
    gradients = weight_gradients(dz, *inputs)
    assert len(gradients) == 2
    for gradient, x in zip(gradients, inputs, strict=True):
        assert gradient.shape == (52, x.shape[1]) and gradient.is_contiguous()
        assert_close(gradient, dz.t() @ x, rtol=1e-5, atol=1e-4)


@needs_onednn
def test_input_gradient_on_onednn_is_the_plain_product():
    dz, weight = _rows_and_weight(1024, 650, 1040)  # dz [1024, 1040], weight [1040, 650] below
    weight = weight.t().contiguous()
    assert input_gradient_on_onednn(dz, weight)
    gradient = input_gradient(dz, weight)
    assert gradient.shape == (1024, 650) and gradient.is_contiguous()
    assert_close(gradient, dz @ weight, rtol=1e-4, atol=1e-3)


@needs_onednn
@pytest.mark.parametrize("layer_class", [LSTMLayer, GRULayer])
def test_a_window_on_onednn_matches_the_cell_loop(monkeypatch, layer_class):
    """With the rules' thresholds at zero, a small window's projection and dx (and the LSTM's weight
    gradients) run on oneDNN; its outputs and every gradient still match autograd through the layer's
    step-by-step `_cell` loop (`_run_reference`)."""
    monkeypatch.setattr(onednn_linear, "MIN_MULTIPLY_ADDS", 0)
    monkeypatch.setattr(onednn_linear, "WEIGHT_GRADIENTS_MIN_WIDTH", 0)
    torch.manual_seed(3)
    layer = layer_class(13, 20)
    x = torch.randn(6, 5, 13, requires_grad=True)
    assert projection_on_onednn(x.view(30, 13), layer.weight_ax)
    assert_window_matches_cell_loop(layer, x, layer.initial_state(5), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "capability, vendor, expected",
    [("AVX512", "AuthenticAMD", True), ("AVX2", "AuthenticAMD", False), ("AVX512", "GenuineIntel", False)],
)
def test_onednn_takes_the_products_only_on_the_cpus_measured(monkeypatch, capability, vendor, expected):
    monkeypatch.undo()  # the real onednn_outpaces_mkl, not the fixture's
    onednn_linear.onednn_outpaces_mkl.cache_clear()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(onednn_linear, "cpu_vendor", lambda: vendor)
    try:
        assert onednn_linear.onednn_outpaces_mkl() is expected
        x, weight = _rows_and_weight(4096, 512, 128)
        assert projection_on_onednn(x, weight) is (expected and onednn_available())
    finally:
        onednn_linear.onednn_outpaces_mkl.cache_clear()


def test_the_cpu_vendor_is_read_where_linux_lists_it():
    assert isinstance(onednn_linear.cpu_vendor(), str)
