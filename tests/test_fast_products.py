"""The two product helpers behind the speed work: `StepProduct` (a time loop's per-step product on oneDNN)
and `ColumnPanels` (generation's matrix-vector products shared out across cores). Each must compute the
plain product, and the windows that use oneDNN must still equal the cell-by-cell loop."""

import pytest
import torch
from torch.testing import assert_close

from lmtrain.cells import build_layer, step_product
from lmtrain.cells.panels import ColumnPanels, panel_count
from lmtrain.cells.step_product import LAYOUT_MIN_STEPS, ONEDNN_MIN_WIDTH, StepProduct, onednn_available

needs_onednn = pytest.mark.skipif(not onednn_available(), reason="this torch has no oneDNN linear operators")


@needs_onednn
@pytest.mark.parametrize("with_add", [False, True])
def test_step_product_on_onednn_equals_the_plain_product_and_leaves_its_inputs(with_add):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(1024, 512, generator=generator)  # nn.Linear layout: [N, K]
    x = torch.randn(5, 512, generator=generator)
    add = torch.randn(5, 1024, generator=generator) if with_add else None
    x_before, add_before = x.clone(), None if add is None else add.clone()
    product = StepProduct(weight, batch=5)
    assert product.use_onednn
    expected = x @ weight.t() + (0 if add is None else add)
    assert_close(product(x, add), expected, rtol=1e-5, atol=1e-4)
    assert_close(StepProduct(weight, 5, use_onednn=False)(x, add), expected, rtol=1e-5, atol=1e-4)
    assert torch.equal(x, x_before) and (add is None or torch.equal(add, add_before))


@needs_onednn
def test_step_product_on_onednn_reads_strided_operands_and_other_batch_sizes():
    """The windows pass column slices (`z[:, :2H]`) and transposed weights; the packed weight was laid out
    for one batch size but must also serve another (a window's last, shorter batch never happens, but a
    caller may)."""
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(512, 1024, generator=generator).t()  # a transposed view: [1024, 512]
    x = torch.randn(512, 3, generator=generator).t()  # [3, 512], not contiguous
    add = torch.randn(3, 2048, generator=generator)[:, ::2]  # [3, 1024], strided
    product = StepProduct(weight, batch=8)
    assert product.use_onednn
    assert_close(product(x, add), add + x @ weight.t(), rtol=1e-5, atol=1e-4)


def test_step_product_keeps_addmm_where_onednn_does_not_pay_or_cannot_run(monkeypatch):
    wide = torch.randn(ONEDNN_MIN_WIDTH, ONEDNN_MIN_WIDTH)
    assert not StepProduct(wide.double(), 4).use_onednn  # float64: oneDNN's linear is fp32/bf16 only
    assert not StepProduct(wide[:, : ONEDNN_MIN_WIDTH - 1], 4).use_onednn  # too narrow to gain
    assert not StepProduct(wide.bfloat16(), 4).use_onednn  # bf16 under autocast: addmm, as autocast would
    monkeypatch.setattr(step_product, "onednn_available", lambda: False)
    assert not StepProduct(wide, 4).use_onednn  # a torch built without oneDNN
    x = torch.randn(4, ONEDNN_MIN_WIDTH)
    assert_close(StepProduct(wide, 4)(x), x @ wide.t())


def test_a_short_loop_multiplies_the_weight_as_it_is():
    """Fewer than LAYOUT_MIN_STEPS products do not repay a layout: no oneDNN reorder, no transposed copy."""
    weight = torch.randn(ONEDNN_MIN_WIDTH, ONEDNN_MIN_WIDTH)
    product = StepProduct(weight, 4, steps=LAYOUT_MIN_STEPS - 1)
    assert not product.use_onednn
    assert product.weight_t.data_ptr() == weight.data_ptr()  # a view of the weight
    x, add = torch.randn(4, ONEDNN_MIN_WIDTH), torch.randn(4, ONEDNN_MIN_WIDTH)
    assert_close(product(x, add), add + x @ weight.t())
    assert StepProduct(weight, 4, steps=LAYOUT_MIN_STEPS).use_onednn == onednn_available()


@needs_onednn
@pytest.mark.parametrize("kind", ["lstm", "gru", "gru-cudnn"])
def test_windows_on_onednn_equal_the_cell_loop(kind, monkeypatch):
    """At H = 512 in fp32 the hand-written windows run their per-step products on oneDNN; outputs and every
    gradient must match autograd through the step-by-step `_cell` loop (which uses addmm)."""
    chosen = []
    original_init = StepProduct.__init__

    def recording_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        chosen.append(self.use_onednn)

    monkeypatch.setattr(StepProduct, "__init__", recording_init)
    torch.manual_seed(0)
    cell, options = {
        "lstm": ("lstm", {}),
        "gru": ("gru", {}),
        "gru-cudnn": ("gru", {"gru_variant": "cudnn"}),
    }[kind]
    layer = build_layer(cell, 16, 512, **options)
    x = torch.randn(LAYOUT_MIN_STEPS, 2, 16, requires_grad=True)
    state = tuple(torch.randn(2, 512, requires_grad=True) for _ in range(layer.num_states))
    results = []
    for run in (layer._run_window, layer._run_cells):
        y, final = run(x, state)
        loss = (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum() + final[-1].sum()
        results.append((y, final, torch.autograd.grad(loss, (x, *state, *layer.parameters()))))
    assert chosen and all(chosen), "the window did not use oneDNN"
    (y, final, grads), (y_ref, final_ref, grads_ref) = results
    assert_close((y, final), (y_ref, final_ref), rtol=1e-4, atol=1e-5)
    for got, expected in zip(grads, grads_ref, strict=True):
        assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("add", ["none", "bias", "rows"])
def test_column_panels_compute_the_plain_product(batch, add):
    generator = torch.Generator().manual_seed(2)
    weight = torch.randn(24, 40, generator=generator)  # [K, N]
    x = torch.randn(batch, 24, generator=generator)
    extra = {
        "none": None,
        "bias": torch.randn(40, generator=generator),
        "rows": torch.randn(batch, 40, generator=generator),
    }[add]
    panels = ColumnPanels(weight, panels=4)
    expected = x @ weight + (0 if extra is None else extra)
    assert_close(panels(x, extra), expected)
    assert panels(x, extra).shape == (batch, 40)


def test_panel_count_divides_the_columns(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert [panel_count(n) for n in (2048, 1536, 30, 7)] == [4, 4, 3, 1]
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert [panel_count(n) for n in (2048, 1536, 30)] == [8, 8, 6]


def test_a_onednn_operator_that_computes_something_else_is_not_used(monkeypatch):
    """The oneDNN operators are private to torch: `onednn_available` checks them once on a small product,
    and a torch whose operator changed meaning falls back to addmm instead of training wrongly."""

    class WrongLinear:
        @staticmethod
        def __call__(x, weight, bias, attr, scalars, algorithm):
            return torch.zeros(x.shape[0], weight.shape[0])

        @staticmethod
        def binary(x, other, weight, bias, attr):
            return other  # forgets the product

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", WrongLinear(), raising=False)
    monkeypatch.setattr(
        torch.ops.mkldnn, "_reorder_linear_weight", lambda weight, batch: weight, raising=False
    )
    step_product.onednn_available.cache_clear()
    try:
        assert not onednn_available()
        assert not StepProduct(torch.randn(ONEDNN_MIN_WIDTH, ONEDNN_MIN_WIDTH), 4).use_onednn
    finally:
        monkeypatch.undo()
        step_product.onednn_available.cache_clear()
