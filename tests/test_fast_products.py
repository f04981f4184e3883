"""The two product helpers of the fast layer: `StepProduct` (a time loop's per-step product, on the C
panel kernel or addmm) and `ColumnPanels` (generation's matrix-vector products shared out across
cores). Each must compute the plain product, and the windows on laid-out weights must still equal the
cell-by-cell loop."""

import pytest
import torch
from torch.testing import assert_close

from lmtrain.config import ModelConfig
from lmtrain.fast import step_product
from lmtrain.fast.kernels.panel_product import PanelWeight, panel_product_available, panel_product_pays
from lmtrain.fast.panels import ColumnPanels, panel_count
from lmtrain.fast.step_product import LAYOUT_MIN_STEPS, StepProduct
from lmtrain.model.cells import build_layer

pytestmark = pytest.mark.fast  # tests of lmtrain.fast itself: skipped with LMTRAIN_FAST=off

WIDTH = 512  # a weight wide enough for the panels on any thread count up to 4

needs_panels = pytest.mark.skipif(not panel_product_available(), reason="the C kernels are not built here")
BACKEND_MARKS = {"panels": needs_panels, "addmm": []}
EVERY_BACKEND = [pytest.param(name, marks=marks) for name, marks in BACKEND_MARKS.items()]


@pytest.mark.parametrize("backend", EVERY_BACKEND)
@pytest.mark.parametrize("with_add", [False, True])
def test_step_product_equals_the_plain_product_and_leaves_its_inputs(backend, with_add):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(1024, 512, generator=generator)  # nn.Linear layout: [N, K]
    x = torch.randn(5, 512, generator=generator)
    add = torch.randn(5, 1024, generator=generator) if with_add else None
    x_before, add_before, weight_before = x.clone(), None if add is None else add.clone(), weight.clone()
    product = StepProduct(weight, batch=5, backend=backend)
    assert product.backend == backend
    expected = x @ weight.t() + (0 if add is None else add)
    assert_close(product(x, add), expected, rtol=1e-5, atol=1e-4)
    assert torch.equal(x, x_before) and (add is None or torch.equal(add, add_before))
    assert torch.equal(weight, weight_before)


@pytest.mark.parametrize("backend", EVERY_BACKEND)
def test_step_product_reads_strided_operands_and_fewer_rows(backend):
    """The windows pass column slices (`z[:, :2H]`) and transposed weights; the weight laid out for one
    batch size must also serve a smaller one."""
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(512, 1024, generator=generator).t()  # a transposed view: [1024, 512]
    x = torch.randn(512, 3, generator=generator).t()  # [3, 512], not contiguous
    add = torch.randn(3, 2048, generator=generator)[:, ::2]  # [3, 1024], strided
    product = StepProduct(weight, batch=8, backend=backend)
    assert_close(product(x, add), add + x @ weight.t(), rtol=1e-5, atol=1e-4)


@needs_panels
@pytest.mark.parametrize(
    "rows, inputs, outputs", [(1, 1, 1), (7, 5, 17), (13, 700, 19), (20, 650, 2600), (64, 33, 48)]
)
def test_the_panel_kernel_handles_every_edge_of_its_blocks(rows, inputs, outputs):
    """Row blocks of 6, panels of 16 columns and stretches of 512 inputs, with remainders of each; the
    weight packed from its own layout and from a transposed view."""
    generator = torch.Generator().manual_seed(rows)
    weight = torch.randn(outputs, inputs, generator=generator)
    weight_t = torch.randn(inputs, outputs, generator=generator)
    x, add = torch.randn(rows, inputs, generator=generator), torch.randn(rows, outputs, generator=generator)
    assert_close(PanelWeight(weight, rows)(x), x @ weight.t(), rtol=1e-5, atol=1e-4)
    assert_close(PanelWeight(weight_t.t(), rows)(x, add), add + x @ weight_t, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("backend", EVERY_BACKEND)
def test_step_product_writes_into_a_given_buffer(backend):
    """The fused loops reuse one buffer for every step's product instead of allocating one per step."""
    generator = torch.Generator().manual_seed(4)
    weight, x = torch.randn(48, 32, generator=generator), torch.randn(6, 32, generator=generator)
    add = torch.randn(6, 48, generator=generator)
    buffer = torch.full((6, 48), float("nan"))
    product = StepProduct(weight, batch=6, backend=backend)
    assert product(x, add, out=buffer) is buffer
    assert_close(buffer, add + x @ weight.t(), rtol=1e-5, atol=1e-5)
    buffer.fill_(float("nan"))
    assert product(x, out=buffer) is buffer
    assert_close(buffer, x @ weight.t(), rtol=1e-5, atol=1e-5)


@needs_panels
def test_the_panel_kernel_refuses_a_buffer_of_the_wrong_shape():
    product = PanelWeight(torch.randn(8, 4), batch=2)
    with pytest.raises(ValueError, match="out must be"):
        product(torch.randn(2, 4), out=torch.empty(2, 9))
    with pytest.raises(ValueError, match="out must be"):
        product(torch.randn(2, 4), out=torch.empty(8, 2).t())


@needs_panels
def test_the_panel_kernel_gives_the_same_bits_on_any_number_of_threads():
    generator = torch.Generator().manual_seed(3)
    weight, x = torch.randn(2048, 512, generator=generator), torch.randn(64, 512, generator=generator)
    product = PanelWeight(weight, 64)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = product(x)
        torch.set_num_threads(2)
        two = product(x)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


@needs_panels
def test_the_panel_kernel_refuses_what_it_cannot_multiply():
    product = PanelWeight(torch.randn(8, 4), batch=2)
    with pytest.raises(ValueError, match="does not fit"):
        product(torch.randn(3, 4))  # more rows than the scratch was made for
    with pytest.raises(ValueError, match="does not fit"):
        product(torch.randn(2, 5))
    with pytest.raises(ValueError, match="fp32 CPU"):
        product(torch.randn(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="add"):
        product(torch.randn(2, 4), torch.randn(2, 9))


def test_step_product_picks_the_fastest_backend_that_applies(monkeypatch):
    wide = torch.randn(WIDTH, WIDTH)
    assert StepProduct(wide, 4).backend == ("panels" if panel_product_pays(WIDTH) else "addmm")
    assert StepProduct(wide.double(), 4).backend == "addmm"  # float64: the panels take fp32 only
    assert StepProduct(wide.bfloat16(), 4).backend == "addmm"  # bf16 under autocast: addmm, as autocast would
    monkeypatch.setattr(step_product, "panel_product_pays", lambda rows: False)  # (no C compiler)
    assert StepProduct(wide, 4).backend == "addmm"
    x = torch.randn(4, WIDTH)
    assert_close(StepProduct(wide, 4)(x), x @ wide.t())
    with pytest.raises(ValueError, match="backend"):
        StepProduct(wide, 4, backend="blas")


@needs_panels
def test_the_panels_are_chosen_only_where_they_were_measured_to_pay(monkeypatch):
    """The panel product beats addmm when built with OpenMP and vector code (AVX2 or AVX-512, not the
    portable one-thread build) and when each thread gets at least 8 panels of 16 rows."""
    from lmtrain.fast.kernels import panel_product

    kernels = panel_product._kernels()
    monkeypatch.setattr(kernels, "tuned", panel_product.AVX2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert panel_product_pays(256) and not panel_product_pays(255)  # 8 panels a thread, then fewer
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    assert panel_product_pays(2048) and not panel_product_pays(2047)
    monkeypatch.setattr(kernels, "tuned", panel_product.AVX512)
    assert panel_product_pays(2048)
    monkeypatch.setattr(kernels, "tuned", panel_product.UNTUNED)
    assert not panel_product_pays(4096)


def test_a_short_loop_multiplies_the_weight_as_it_is():
    """Fewer than LAYOUT_MIN_STEPS products do not repay a layout: no packing, no transposed copy."""
    weight = torch.randn(WIDTH, WIDTH)
    product = StepProduct(weight, 4, steps=LAYOUT_MIN_STEPS - 1)
    assert product.backend == "addmm"
    assert product.weight_t.data_ptr() == weight.data_ptr()  # a view of the weight
    x, add = torch.randn(4, WIDTH), torch.randn(4, WIDTH)
    assert_close(product(x, add), add + x @ weight.t())
    assert StepProduct(weight, 4, steps=LAYOUT_MIN_STEPS).backend == StepProduct(weight, 4).backend


@pytest.mark.parametrize("backend", EVERY_BACKEND)
@pytest.mark.parametrize("kind", ["lstm", "gru", "gru-cudnn"])
def test_windows_on_laid_out_weights_equal_the_cell_loop(kind, backend, monkeypatch, step_product_backends):
    """At H = 512 in fp32 the hand-written windows run their per-step products on the panels or addmm;
    outputs and every gradient must match autograd through the step-by-step `_cell` loop (addmm)."""
    monkeypatch.setattr(StepProduct, "choose_backend", staticmethod(lambda weight, short_loop: backend))
    torch.manual_seed(0)
    fields = {
        "lstm": {"cell": "lstm"},
        "gru": {"cell": "gru"},
        "gru-cudnn": {"cell": "gru", "gru_variant": "cudnn"},
    }[kind]
    layer = build_layer(ModelConfig(**fields, hidden_size=512), 16)
    x = torch.randn(LAYOUT_MIN_STEPS, 2, 16, requires_grad=True)
    state = tuple(torch.randn(2, 512, requires_grad=True) for _ in range(layer.num_states))
    results = []
    for run in (layer._run_fused, layer._run_reference):
        y, final = run(x, state)
        loss = (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum() + final[-1].sum()
        results.append((y, final, torch.autograd.grad(loss, (x, *state, *layer.parameters()))))
    assert step_product_backends and set(step_product_backends) == {backend}, f"not run on {backend}"
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
