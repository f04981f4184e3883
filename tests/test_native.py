"""Proof that rnn, lstm and the cudnn GRU compute exactly what torch.nn.RNN / LSTM / GRU compute.

Weights go from a torch module (1 and 2 layers, both bias vectors non-zero) into our layers with
`stack_from_native`; in float64, outputs, final states and the gradients of the input, the initial state
and every parameter must agree to `assert_close`'s float64 tolerance (rtol 1e-7, atol 1e-7). The
gradient layout below is written out independently of the library: torch stacks GRU gates r, z, n with
`h' = (1 - z) n + z h`, we stack u, r, c̃ with `c<t> = Γ_u c̃ + (1 - Γ_u) c<t-1>`, so our u is torch's z
negated.
"""

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from lmtrain.config import ModelConfig
from lmtrain.model.cells import (
    CudnnGRULayer,
    ESNLayer,
    GRULayer,
    LSTMLayer,
    RNNLayer,
    build_layer,
    stack_from_native,
    stack_to_native,
)

T, B, IN, H = 6, 3, 5, 4

CASES = [
    pytest.param(nn.RNN, {"nonlinearity": "tanh"}, id="rnn-tanh"),
    pytest.param(nn.RNN, {"nonlinearity": "relu"}, id="rnn-relu"),
    pytest.param(nn.LSTM, {}, id="lstm"),
    pytest.param(nn.GRU, {}, id="gru-cudnn"),
]


def _torch_module(module_class, options, num_layers):
    torch.manual_seed(3)
    return module_class(IN, H, num_layers=num_layers, **options).double()


def _torch_state(module_class, num_layers, seed=2):
    generator = torch.Generator().manual_seed(seed)
    count = 2 if module_class is nn.LSTM else 1
    return tuple(
        torch.randn(num_layers, B, H, dtype=torch.float64, generator=generator).requires_grad_()
        for _ in range(count)
    )


def _run_torch(module, x, state):
    y, final = module(x, state if isinstance(module, nn.LSTM) else state[0])
    return y, final if isinstance(final, tuple) else (final,)


def _run_ours(layers, x, torch_state):
    """Our stack from torch's initial state ([L, B, H] per tensor); the final state in torch's layout."""
    finals = []
    for depth, layer in enumerate(layers):
        x, final = layer(x, tuple(s[depth] for s in torch_state))
        finals.append(final)
    return x, tuple(torch.stack(tensors) for tensors in zip(*finals, strict=True))


def _loss(y, final):
    # Weigh every output and final state differently so no gradient hides behind a symmetric sum.
    weights = torch.linspace(-1.0, 1.0, y.numel(), dtype=y.dtype).reshape(y.shape)
    return (weights * y).sum() + sum((s**2 * (1 + i)).sum() for i, s in enumerate(final))


def _torch_order(layer, ours):
    """Our stacked rows (or their gradient) in torch's gate order."""
    if not isinstance(layer, CudnnGRULayer):
        return ours
    update, reset, candidate = ours.chunk(3, dim=0)
    return torch.cat([reset, -update, candidate])


def _input():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(T, B, IN, dtype=torch.float64, generator=generator).requires_grad_()


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize(("module_class", "options"), CASES)
def test_outputs_states_and_gradients_equal_torch(module_class, options, num_layers):
    module = _torch_module(module_class, options, num_layers)
    layers = stack_from_native(module)
    assert len(layers) == num_layers
    x_torch, x_ours = _input(), _input()
    state_torch = _torch_state(module_class, num_layers)
    state_ours = tuple(s.detach().clone().requires_grad_() for s in state_torch)

    y_torch, final_torch = _run_torch(module, x_torch, state_torch)
    y_ours, final_ours = _run_ours(layers, x_ours, state_ours)
    assert_close(y_ours, y_torch)
    assert len(final_ours) == len(final_torch)
    for ours, theirs in zip(final_ours, final_torch, strict=True):
        assert_close(ours, theirs)

    _loss(y_torch, final_torch).backward()
    _loss(y_ours, final_ours).backward()
    assert_close(x_ours.grad, x_torch.grad)
    for ours, theirs in zip(state_ours, state_torch, strict=True):
        assert_close(ours.grad, theirs.grad)
    hidden = H
    for k, layer in enumerate(layers):
        grads = {
            name: getattr(module, f"{name}_l{k}").grad
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        }
        assert_close(_torch_order(layer, layer.weight_ax.grad), grads["weight_ih"])
        assert_close(_torch_order(layer, layer.weight_aa.grad), grads["weight_hh"])
        # Both torch biases are added to the same pre-activation, so each gets our bias's gradient ...
        assert_close(_torch_order(layer, layer.bias.grad), grads["bias_ih"])
        if isinstance(layer, CudnnGRULayer):
            # ... except the GRU's b_hn, which sits inside the reset gate: it is our b_ca.
            assert_close(_torch_order(layer, layer.bias.grad)[: 2 * hidden], grads["bias_hh"][: 2 * hidden])
            assert_close(layer.recurrent_candidate_bias.grad, grads["bias_hh"][2 * hidden :])
        else:
            assert_close(layer.bias.grad, grads["bias_hh"])
        assert all(p.grad is not None for p in layer.parameters())


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize(
    ("cell", "options", "torch_class"),
    [
        ("rnn", {"nonlinearity": "tanh"}, nn.RNN),
        ("rnn", {"nonlinearity": "relu"}, nn.RNN),
        ("lstm", {}, nn.LSTM),
        ("gru", {"gru_variant": "cudnn"}, nn.GRU),
    ],
)
@torch.no_grad()
def test_to_native_computes_the_same_and_round_trips(cell, options, torch_class, num_layers):
    torch.manual_seed(0)
    config = ModelConfig(cell=cell, hidden_size=H, **options)
    layers = nn.ModuleList(build_layer(config, IN if k == 0 else H).double() for k in range(num_layers))
    x = _input()
    state = _torch_state(torch_class, num_layers)

    module = stack_to_native(layers)
    assert type(module) is torch_class
    assert (module.num_layers, module.bidirectional, module.batch_first) == (num_layers, False, False)
    assert module.weight_ih_l0.dtype == torch.float64
    y_torch, final_torch = _run_torch(module, x, state)
    y_ours, final_ours = _run_ours(layers, x, state)
    assert_close(y_torch, y_ours)
    for theirs, ours in zip(final_torch, final_ours, strict=True):
        assert_close(theirs, ours)

    # The state dict itself: torch's keys, and what a saved nn.* state dict loads back into our layers.
    native = {}
    for k, layer in enumerate(layers):
        native.update(layer.native_state_dict(k))
    assert native.keys() == module.state_dict().keys()
    for key, tensor in module.state_dict().items():
        assert_close(native[key], tensor)
    back = stack_from_native(module)
    for k, (layer, returned) in enumerate(zip(layers, back, strict=True)):
        assert type(returned) is type(layer)
        for name, parameter in layer.named_parameters():
            assert_close(getattr(returned, name), parameter, msg=f"layer {k} {name}")
        fresh = build_layer(config, layer.input_size).double()
        fresh.load_native_state_dict(module.state_dict(), index=k)
        for name, parameter in layer.named_parameters():
            assert_close(getattr(fresh, name), parameter)


def test_one_layer_to_native_and_from_native():
    torch.manual_seed(0)
    layer = RNNLayer(IN, H, nonlinearity="relu").double()
    module = layer.to_native()
    assert isinstance(module, nn.RNN) and module.nonlinearity == "relu" and module.num_layers == 1
    back = RNNLayer.from_native(module)
    assert back.nonlinearity == "relu"
    for name, parameter in layer.named_parameters():
        assert_close(getattr(back, name), parameter)


def test_from_native_takes_any_layer_of_a_stack():
    module = _torch_module(nn.LSTM, {}, 2)
    upper = LSTMLayer.from_native(module, index=1)
    assert (upper.input_size, upper.hidden_size) == (H, H)
    assert_close(upper.weight_aa, module.weight_hh_l1)
    assert_close(upper.bias, module.bias_ih_l1 + module.bias_hh_l1)


def test_from_native_sums_the_two_biases():
    module = _torch_module(nn.LSTM, {}, 1)
    layer = LSTMLayer.from_native(module)
    assert_close(layer.bias, module.bias_ih_l0 + module.bias_hh_l0)


@pytest.mark.parametrize("module_class", [nn.RNN, nn.GRU])
def test_from_native_accepts_a_module_without_bias(module_class):
    module = module_class(IN, H, bias=False).double()
    layer = stack_from_native(module)[0]
    assert torch.count_nonzero(layer.bias) == 0
    x = _input().detach()
    assert_close(layer(x)[0], module(x)[0])


@pytest.mark.parametrize(
    ("convert", "message"),
    [
        (lambda: RNNLayer.from_native(nn.RNN(IN, H, bidirectional=True)), "bidirectional=True"),
        (lambda: LSTMLayer.from_native(nn.LSTM(IN, H, proj_size=2)), "proj_size=2"),
        (lambda: LSTMLayer.from_native(nn.LSTM(IN, H), index=1), r"index=1 \(the module has 1 layer"),
        (lambda: LSTMLayer.from_native(nn.RNN(IN, H)), "expects an nn.LSTM, got RNN"),
        (lambda: RNNLayer.from_native(nn.GRU(IN, H)), "expects an nn.RNN, got GRU"),
        (lambda: GRULayer.from_native(nn.GRU(IN, H)), "GRULayer has no torch counterpart"),
        (lambda: GRULayer(IN, H).to_native(), "GRULayer has no torch counterpart"),
        (lambda: ESNLayer(IN, H).to_native(), "ESNLayer has no torch counterpart"),
        (lambda: stack_from_native(nn.Linear(IN, H)), "expects an nn.RNN, nn.LSTM or nn.GRU, got Linear"),
        (lambda: stack_to_native([RNNLayer(IN, H), LSTMLayer(H, H)]), "not the same kind of layer"),
        (
            lambda: stack_to_native([RNNLayer(IN, H), RNNLayer(H, H, nonlinearity="relu")]),
            "not the same kind of layer",
        ),
        (lambda: stack_to_native([RNNLayer(IN, H), RNNLayer(IN, H)]), "upper layers map hidden_size"),
        (
            lambda: RNNLayer(IN, H).load_native_state_dict({"weight_ih_l0": torch.zeros(H, IN + 1)}),
            "no 'weight_hh_l0'",
        ),
    ],
)
def test_conversions_refuse_what_they_cannot_reproduce(convert, message):
    with pytest.raises(ValueError, match=message):
        convert()


# ----- impl: native, torch's fused kernel fed with our parameters ----------------------------------

IMPL_CASES = [
    pytest.param("rnn", {"nonlinearity": "tanh"}, id="rnn-tanh"),
    pytest.param("rnn", {"nonlinearity": "relu"}, id="rnn-relu"),
    pytest.param("lstm", {}, id="lstm"),
    pytest.param("gru", {"gru_variant": "cudnn"}, id="gru-cudnn"),
]


@pytest.mark.parametrize("cell, options", IMPL_CASES)
@pytest.mark.parametrize("initial_state", ["zeros", "learned"])
def test_impl_native_computes_the_custom_window_and_its_gradients(cell, options, initial_state):
    torch.manual_seed(5)
    fields = {"cell": cell, "hidden_size": H, "initial_state": initial_state, **options}
    custom = build_layer(ModelConfig(**fields), IN).double()
    native = build_layer(ModelConfig(**fields, impl="native"), IN).double()
    with torch.no_grad():
        for parameter in custom.parameters():
            parameter.uniform_(-0.5, 0.5)  # learned initial states and every bias non-zero
    native.load_state_dict(custom.state_dict())
    x = torch.randn(T, B, IN, dtype=torch.float64, requires_grad=True)
    given = tuple(torch.randn(B, H, dtype=torch.float64) for _ in range(custom.num_states))
    for state in (None, given):
        results = []
        for layer in (custom, native):
            y, final = layer(x, state)
            loss = (y * torch.linspace(-1, 1, H, dtype=torch.float64)).sum() + sum(
                s.pow(2).sum() for s in final
            )
            # allow_unused: with a given state, learned initial states take no part
            grads = torch.autograd.grad(loss, [x, *layer.parameters()], allow_unused=True)
            results.append((y, final, grads))
        (y_c, final_c, grads_c), (y_n, final_n, grads_n) = results
        assert_close(y_n, y_c)
        assert_close(final_n, final_c)
        assert len(grads_n) == len(grads_c)
        for grad_n, grad_c in zip(grads_n, grads_c, strict=True):
            assert (grad_n is None) == (grad_c is None)
            if grad_c is not None:
                assert_close(grad_n, grad_c)


def test_impl_native_keeps_the_parameters_and_state_dict_of_the_custom_layer():
    custom, native = LSTMLayer(IN, H), LSTMLayer(IN, H, impl="native")
    native(torch.randn(T, B, IN))  # the torch template exists from the first call on
    assert [name for name, _ in native.named_parameters()] == [name for name, _ in custom.named_parameters()]
    assert native.state_dict().keys() == custom.state_dict().keys()
    assert list(native.children()) == []  # the template is no submodule: .to() and DDP never see it
    assert "impl='native'" in repr(native)


@pytest.mark.parametrize("layer_class", [GRULayer, ESNLayer])
def test_impl_native_is_refused_for_cells_torch_does_not_have(layer_class):
    with pytest.raises(ValueError, match="impl='native' needs a torch module"):
        layer_class(IN, H, impl="native")
