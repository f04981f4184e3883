"""Smoke tests of the benchmark scripts' helpers (the timings themselves are not tested: the tables in
docs/ come from running the scripts)."""

import importlib.util
import sys
from pathlib import Path

import torch

from lmtrain.config import ModelConfig
from lmtrain.model import RNNLanguageModel

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _script(name: str):
    if str(SCRIPTS) not in sys.path:  # a script imports its neighbours, as when it runs from scripts/
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_generate_counts_the_weights_a_step_reads():
    bench_generate = _script("bench_generate")
    config = ModelConfig(cell="lstm", embedding_size=16, hidden_size=16, num_layers=2, dropout=0.0)
    folded = RNNLanguageModel(10, config).eval()  # V <= E: the first input half is a lookup
    assert folded.folds_embedding()
    names = [
        [name for name, parameter in folded.named_parameters() if parameter.data_ptr() == weight.data_ptr()]
        for weight in bench_generate.weights_read_per_token(folded)
    ]
    assert names == [
        ["decoder.weight"],
        ["layers.0.weight_aa"],
        ["layers.1.weight_aa"],
        ["layers.1.weight_ax"],
    ]
    unfolded = RNNLanguageModel(40, config).eval()
    assert not unfolded.folds_embedding()
    assert len(bench_generate.weights_read_per_token(unfolded)) == 5
    size, seconds = bench_generate.read_ceiling(unfolded, torch.device("cpu"), repeats=2)
    assert size == 4 * sum(w.numel() for w in bench_generate.weights_read_per_token(unfolded))
    assert seconds > 0


def test_bench_step_products_times_a_loop_of_products():
    bench_step_products = _script("bench_step_products")
    from lmtrain.fast.step_product import StepProduct

    weight, inputs = torch.randn(12, 5), torch.randn(4, 3, 5)
    out = torch.empty(3, 12)
    laid_out = StepProduct(weight, 3, 4, backend="addmm")
    assert bench_step_products.loop_seconds(lambda: laid_out, inputs, out) > 0
    assert torch.allclose(out, inputs[-1] @ weight.t(), atol=1e-6)
    out.zero_()
    assert (
        bench_step_products.loop_seconds(lambda: StepProduct(weight, 3, 4, backend="addmm"), inputs, out) > 0
    )
    assert torch.allclose(out, inputs[-1] @ weight.t(), atol=1e-6)
    assert bench_step_products.parse_shapes("20:650,64:128") == [(20, 650), (64, 128)]


def test_bench_word_stack_pass_computes_the_same_gradients_for_both_models():
    """Without dropout the two models' stacks are one function: the row of the stack alone compares like
    with like."""
    bench_word = _script("bench_word")
    cpu = torch.device("cpu")
    ours, reference = (bench_word.make_model(kind, 8, 12, 0.0, cpu).train() for kind in ("ours", "torch"))
    x = torch.randn(3, 2, 8, requires_grad=True)
    upstream = torch.randn(3, 2, 8)
    grads = []
    for model in (ours, reference):
        x.grad = None
        bench_word.stack_pass(model, x, upstream)
        grads.append(x.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)


def test_bench_word_speed_prints_its_three_rows(capsys):
    bench_word = _script("bench_word")
    args = bench_word.argparse.Namespace(hidden=8, bptt=3, batch=2, reps=1, seconds=0.001)
    bench_word.speed(args, torch.device("cpu"))
    out = capsys.readouterr().out
    assert "| whole step: forward, backward, clip, SGD |" in out
    assert "| the LSTM stack alone: forward + backward |" in out
    assert "| whole step against plain PyTorch (`nn.Linear` decoder) |" in out


def test_bench_words_plain_reference_is_the_same_model_with_nn_linear():
    bench_word = _script("bench_word")
    cpu = torch.device("cpu")
    ours, plain = (bench_word.make_model(kind, 8, 12, 0.0, cpu) for kind in ("ours", "plain"))
    assert type(plain.decoder) is torch.nn.Linear and torch.equal(plain.decoder.weight, ours.decoder.weight)
    inputs, targets = bench_word.batch(12, 4, 2, cpu)
    torch.testing.assert_close(
        bench_word.loss_of(ours, inputs, targets),
        bench_word.loss_of(plain, inputs, targets),
        rtol=1e-5,
        atol=1e-6,
    )
