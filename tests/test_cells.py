"""The recurrent layers against hand computations of their equations, finite differences (gradcheck),
and the properties of every init scheme and initial state; torch equality is in test_native.py."""

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from lmtrain.config import ModelConfig
from lmtrain.model.cells import (
    CELLS,
    CudnnGRULayer,
    ESNLayer,
    GRULayer,
    LSTMLayer,
    RNNLayer,
    build_layer,
    layer_class,
)

from helpers import LAYER_KINDS

T, B, IN, H = 5, 2, 3, 4


def _layer(kind: str, **options) -> nn.Module:
    torch.manual_seed(0)
    return build_layer(ModelConfig(**LAYER_KINDS[kind], hidden_size=H, **options), IN).double()


def _input(seed: int = 1) -> torch.Tensor:
    return torch.randn(T, B, IN, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _random_state(layer, seed: int = 2) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, dtype=torch.float64, generator=generator) for _ in range(layer.num_states))


# Hand computations: one sample at a time, with the stacked W_a = [W_aa | W_ax] acting on [a<t-1>, x<t>]
# exactly as the notes write it, and no code from lmtrain.model.cells.


def _rnn_by_hand(layer, x, a0, g):
    w_a = torch.cat([layer.weight_aa, layer.weight_ax], dim=1)  # [H, H + IN]
    b_a = layer.bias
    outputs = torch.empty(T, B, H, dtype=x.dtype)
    for n in range(B):
        a = a0[n]
        for t in range(T):
            a = g(w_a @ torch.cat([a, x[t, n]]) + b_a)
            outputs[t, n] = a
    return outputs, (outputs[-1],)


def _gru_by_hand(layer, x, c0):
    w = torch.cat([layer.weight_aa, layer.weight_ax], dim=1)  # [3H, H + IN], blocks u, r, c̃
    w_u, w_r, w_c = w[:H], w[H : 2 * H], w[2 * H :]
    b_u, b_r, b_c = layer.bias[:H], layer.bias[H : 2 * H], layer.bias[2 * H :]
    outputs = torch.empty(T, B, H, dtype=x.dtype)
    for n in range(B):
        c = c0[n]
        for t in range(T):
            gamma_u = torch.sigmoid(w_u @ torch.cat([c, x[t, n]]) + b_u)
            gamma_r = torch.sigmoid(w_r @ torch.cat([c, x[t, n]]) + b_r)
            c_tilde = torch.tanh(w_c @ torch.cat([gamma_r * c, x[t, n]]) + b_c)
            c = gamma_u * c_tilde + (1 - gamma_u) * c
            outputs[t, n] = c
    return outputs, (outputs[-1],)


def _cudnn_gru_by_hand(layer, x, c0):
    w = torch.cat([layer.weight_aa, layer.weight_ax], dim=1)  # [3H, H + IN], blocks u, r, c̃
    w_u, w_r = w[:H], w[H : 2 * H]
    w_ca, w_cx = layer.weight_aa[2 * H :], layer.weight_ax[2 * H :]
    b_u, b_r, b_c = layer.bias[:H], layer.bias[H : 2 * H], layer.bias[2 * H :]
    b_ca = layer.recurrent_candidate_bias
    outputs = torch.empty(T, B, H, dtype=x.dtype)
    for n in range(B):
        c = c0[n]
        for t in range(T):
            gamma_u = torch.sigmoid(w_u @ torch.cat([c, x[t, n]]) + b_u)
            gamma_r = torch.sigmoid(w_r @ torch.cat([c, x[t, n]]) + b_r)
            c_tilde = torch.tanh(w_cx @ x[t, n] + b_c + gamma_r * (w_ca @ c + b_ca))
            c = gamma_u * c_tilde + (1 - gamma_u) * c
            outputs[t, n] = c
    return outputs, (outputs[-1],)


def _lstm_by_hand(layer, x, a0, c0):
    w = torch.cat([layer.weight_aa, layer.weight_ax], dim=1)  # [4H, H + IN], blocks u, f, C̃, o
    w_u, w_f, w_c, w_o = w[:H], w[H : 2 * H], w[2 * H : 3 * H], w[3 * H :]
    b_u, b_f, b_c, b_o = layer.bias[:H], layer.bias[H : 2 * H], layer.bias[2 * H : 3 * H], layer.bias[3 * H :]
    outputs = torch.empty(T, B, H, dtype=x.dtype)
    cells = torch.empty(B, H, dtype=x.dtype)
    for n in range(B):
        a, c = a0[n], c0[n]
        for t in range(T):
            a_x = torch.cat([a, x[t, n]])
            c_tilde = torch.tanh(w_c @ a_x + b_c)
            gamma_u = torch.sigmoid(w_u @ a_x + b_u)
            gamma_f = torch.sigmoid(w_f @ a_x + b_f)
            gamma_o = torch.sigmoid(w_o @ a_x + b_o)
            c = gamma_u * c_tilde + gamma_f * c
            a = gamma_o * torch.tanh(c)
            outputs[t, n] = a
        cells[n] = c
    return outputs, (outputs[-1], cells)


def _by_hand(kind, layer, x, state):
    if state is None:
        state = tuple(torch.zeros(B, H, dtype=x.dtype) for _ in range(layer.num_states))
    if kind in ("rnn", "esn"):  # the esn is the rnn's equation with a fixed W_aa
        return _rnn_by_hand(layer, x, *state, g=torch.tanh)
    if kind == "relu":
        return _rnn_by_hand(layer, x, *state, g=torch.relu)
    if kind == "gru":
        return _gru_by_hand(layer, x, *state)
    if kind == "gru-cudnn":
        return _cudnn_gru_by_hand(layer, x, *state)
    return _lstm_by_hand(layer, x, *state)


@pytest.mark.parametrize("kind", list(LAYER_KINDS))
@pytest.mark.parametrize("nonzero_state", [False, True], ids=["zero_state", "given_state"])
@torch.no_grad()
def test_forward_matches_the_equations(kind, nonzero_state):
    layer = _layer(kind)
    x = _input()
    state = _random_state(layer) if nonzero_state else None

    y, final = layer(x, state)

    expected_y, expected_final = _by_hand(kind, layer, x, state)
    assert y.shape == (T, B, H)
    assert_close(y, expected_y)
    assert len(final) == layer.num_states
    for got, expected in zip(final, expected_final, strict=True):
        assert_close(got, expected)


@pytest.mark.parametrize("kind", list(LAYER_KINDS))
def test_step_repeated_equals_forward(kind):
    layer = _layer(kind)
    x = _input()
    state = _random_state(layer)

    y, final = layer(x, state)

    step_state = state
    step_outputs = []
    for x_t in x.unbind(0):
        y_t, step_state = layer.step(x_t, step_state)
        step_outputs.append(y_t)
    assert_close(torch.stack(step_outputs), y)
    for got, expected in zip(step_state, final, strict=True):
        assert_close(got, expected)


@pytest.mark.parametrize("kind", list(LAYER_KINDS))
def test_gradient_flows_through_the_state_to_the_first_input(kind):
    layer = _layer(kind)
    x = _input().requires_grad_()

    y, _ = layer(x)
    y[-1].sum().backward()

    assert torch.count_nonzero(x.grad[0]) > 0


@pytest.mark.parametrize("kind", list(LAYER_KINDS))
def test_initial_state_is_zeros_of_the_right_shape(kind):
    layer = _layer(kind)
    state = layer.initial_state(B)
    assert isinstance(state, tuple)
    assert len(state) == layer.num_states == (2 if kind == "lstm" else 1)
    for tensor in state:
        assert tensor.shape == (B, H)
        assert tensor.dtype == torch.float64
        assert torch.count_nonzero(tensor) == 0


def test_parameter_shapes_and_lstm_forget_bias():
    for kind, gates in [("rnn", 1), ("gru", 3), ("gru-cudnn", 3), ("lstm", 4), ("esn", 1)]:
        layer = _layer(kind)
        assert layer.weight_aa.shape == (gates * H, H)
        assert layer.weight_ax.shape == (gates * H, IN)
        assert layer.bias.shape == (gates * H,)
    assert _layer("gru-cudnn").recurrent_candidate_bias.shape == (H,)
    lstm = _layer("lstm")
    assert torch.all(lstm.bias[H : 2 * H] == 1.0)
    bound = H**-0.5
    for parameter in (lstm.weight_aa, lstm.weight_ax, lstm.bias[:H], lstm.bias[2 * H :]):
        assert parameter.abs().max() <= bound


@pytest.mark.parametrize("kind", list(LAYER_KINDS))
@pytest.mark.parametrize("initial_state", ["given", "learned"])
def test_gradcheck(kind, initial_state):
    """Analytic gradients of the input, the given initial state and every parameter against finite
    differences, in float64; with `learned`, through the learned initial state instead."""
    torch.manual_seed(0)
    options = {"initial_state": "learned"} if initial_state == "learned" else {}
    layer = _layer(kind, **options)
    with torch.no_grad():  # learned initial states start at zero; make their gradient check non-trivial
        for parameter in layer.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    names = [name for name, _ in layer.named_parameters()]
    params = [parameter.detach().clone().requires_grad_() for parameter in layer.parameters()]
    x = _input().requires_grad_()
    state = [s.requires_grad_() for s in _random_state(layer)] if initial_state == "given" else []

    def run(x, *rest):
        given, weights = rest[: len(state)], rest[len(state) :]
        y, final = torch.func.functional_call(
            layer, dict(zip(names, weights, strict=True)), (x, tuple(given) if given else None)
        )
        return (y, *final)

    assert torch.autograd.gradcheck(run, (x, *state, *params))


def test_esn_reservoir_is_fixed_and_scaled_to_the_spectral_radius():
    torch.manual_seed(0)
    layer = ESNLayer(IN, 16, spectral_radius=0.8)
    assert "weight_aa" in dict(layer.named_buffers()) and "weight_aa" in layer.state_dict()
    assert "weight_aa" not in dict(layer.named_parameters())
    assert not layer.weight_aa.requires_grad
    radius = torch.linalg.eigvals(layer.weight_aa.double()).abs().max()
    assert abs(float(radius) - 0.8) < 1e-3

    reservoir = layer.weight_aa.clone()
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    y, _ = layer(torch.randn(T, B, IN))
    y.square().sum().backward()
    assert layer.weight_aa.grad is None
    assert layer.weight_ax.grad is not None and torch.count_nonzero(layer.weight_ax.grad) > 0
    assert layer.bias.grad is not None
    optimizer.step()
    assert torch.equal(layer.weight_aa, reservoir)

    with pytest.raises(ValueError, match="spectral_radius must be > 0"):
        ESNLayer(IN, H, spectral_radius=0.0)


def test_esn_reservoirs_differ_by_seed_and_radius_is_respected_at_other_sizes():
    torch.manual_seed(1)
    first = ESNLayer(IN, 32, spectral_radius=1.2)
    second = ESNLayer(IN, 32, spectral_radius=1.2)
    assert not torch.equal(first.weight_aa, second.weight_aa)
    for layer in (first, second):
        assert abs(float(torch.linalg.eigvals(layer.weight_aa.double()).abs().max()) - 1.2) < 1e-3


@pytest.mark.parametrize("kind", ["rnn", "gru", "gru-cudnn", "lstm"])
def test_xavier_orthogonal_he_schemes(kind):
    fan_in, fan_out = H + IN, H
    gates = {"rnn": 1, "lstm": 4}.get(kind, 3)
    xavier = _layer(kind, init="xavier")
    bound = (6 / (fan_in + fan_out)) ** 0.5
    assert xavier.weight_aa.abs().max() <= bound and xavier.weight_ax.abs().max() <= bound
    assert xavier.weight_aa.abs().max() > bound / 2  # drawn from the whole range, not a smaller one

    orthogonal = _layer(kind, init="orthogonal")
    for block in orthogonal.weight_aa.chunk(gates, dim=0):
        assert_close(block @ block.t(), torch.eye(H, dtype=torch.float64), atol=1e-6, rtol=0)  # float32-made
    assert orthogonal.weight_ax.abs().max() <= bound

    torch.manual_seed(0)
    he = build_layer(ModelConfig(**LAYER_KINDS[kind], hidden_size=64, init="he"), 64)
    std = torch.cat([he.weight_aa.flatten(), he.weight_ax.flatten()]).detach().std()
    assert abs(float(std) - (2 / 128) ** 0.5) < 0.01

    for layer in (xavier, orthogonal, he):
        bias = layer.bias.detach().clone()
        if kind == "lstm":  # the forget-gate bias stays 1 under every scheme
            hidden = layer.hidden_size
            assert torch.all(bias[hidden : 2 * hidden] == 1.0)
            bias[hidden : 2 * hidden] = 0
        assert torch.count_nonzero(bias) == 0
        if kind == "gru-cudnn":
            assert torch.count_nonzero(layer.recurrent_candidate_bias) == 0


def test_identity_init_is_the_irnn():
    layer = _layer("relu", init="identity")
    assert torch.equal(layer.weight_aa, torch.eye(H, dtype=torch.float64))
    assert torch.count_nonzero(layer.bias) == 0
    assert 0 < layer.weight_ax.abs().max() < 0.01
    # With no input, an IRNN carries a non-negative state unchanged.
    state = (torch.rand(B, H, dtype=torch.float64),)
    with torch.no_grad():
        layer.weight_ax.zero_()
        y, final = layer(torch.randn(T, B, IN, dtype=torch.float64), state)
    assert_close(final[0], state[0])
    for other in (GRULayer, LSTMLayer, ESNLayer):
        with pytest.raises(ValueError, match="IRNN initialisation of the plain rnn"):
            other(IN, H, init="identity")


def test_lstm_forget_bias_is_configurable():
    layer = _layer("lstm", forget_bias=2.5)
    assert torch.all(layer.bias[H : 2 * H] == 2.5)


def test_default_init_is_pytorchs_uniform():
    for kind in ("rnn", "gru", "gru-cudnn", "lstm"):
        layer = _layer(kind)
        bound = H**-0.5
        extra = [layer.recurrent_candidate_bias] if kind == "gru-cudnn" else []
        for parameter in (layer.weight_aa, layer.weight_ax, *extra):
            assert 0 < parameter.abs().max() <= bound


@pytest.mark.parametrize("kind", list(LAYER_KINDS))
def test_random_initial_state_is_fresh_in_training_and_zero_in_eval(kind):
    layer = _layer(kind, initial_state="random", initial_state_scale=0.5)
    first, second = layer.initial_state(64), layer.initial_state(64)
    assert len(first) == layer.num_states
    for a, b in zip(first, second, strict=True):
        assert a.shape == (64, H) and not torch.equal(a, b)
        assert abs(float(a.std()) - 0.5) < 0.1
    # forward(x, None) starts from such a draw: two runs differ.
    x = _input()
    assert not torch.equal(layer(x)[0], layer(x)[0])
    layer.eval()
    for tensor in layer.initial_state(B):
        assert torch.count_nonzero(tensor) == 0
    assert torch.equal(layer(x)[0], layer(x)[0])


@pytest.mark.parametrize("kind", list(LAYER_KINDS))
def test_learned_initial_state_is_a_trained_parameter(kind):
    layer = _layer(kind, initial_state="learned")
    names = ["initial_a", "initial_c"] if kind == "lstm" else ["initial_a"]
    parameters = dict(layer.named_parameters())
    for name in names:
        assert parameters[name].shape == (H,) and torch.count_nonzero(parameters[name]) == 0
    with torch.no_grad():
        layer.initial_a.fill_(0.3)
    state = layer.initial_state(B)
    assert state[0].shape == (B, H) and torch.all(state[0] == 0.3)

    y, _ = layer(_input())
    y.sum().backward()
    for name in names:
        assert torch.count_nonzero(parameters[name].grad) > 0
    assert "initial_a" in layer.state_dict()
    assert "initial_a" not in _layer(kind).state_dict()


def test_layer_options_are_validated():
    with pytest.raises(ValueError, match="unknown init 'glorot'; choose one of: default, xavier"):
        RNNLayer(IN, H, init="glorot")
    with pytest.raises(
        ValueError, match="unknown initial_state 'ones'; choose one of: zeros, random, learned"
    ):
        RNNLayer(IN, H, initial_state="ones")
    with pytest.raises(ValueError, match="initial_state_scale must be >= 0"):
        RNNLayer(IN, H, initial_state_scale=-1.0)
    with pytest.raises(ValueError, match="unknown gru_variant 'keras'; choose one of: notes, cudnn"):
        layer_class("gru", gru_variant="keras")


@pytest.mark.parametrize("kind", list(LAYER_KINDS))
def test_bad_shapes_raise_value_error(kind):
    layer = _layer(kind)
    good_state = layer.initial_state(B)
    with pytest.raises(ValueError, match=r"input of shape \[T >= 1, B, input_size=3\], got \[5, 2, 5\]"):
        layer(torch.zeros(T, B, IN + 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"got \[2, 3\]"):
        layer(torch.zeros(B, IN, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"got \[0, 2, 3\]"):
        layer(torch.zeros(0, B, IN, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"state a of shape \[B=2, H=4\], got \[3, 4\]"):
        layer(_input(), tuple(torch.zeros(B + 1, H, dtype=torch.float64) for _ in good_state))
    with pytest.raises(ValueError, match="expects its state as a tuple"):
        layer(_input(), good_state[0])
    with pytest.raises(ValueError, match=r"step expects input of shape \[B, input_size=3\], got \[5, 2, 3\]"):
        layer.step(_input(), good_state)


def test_build_layer_builds_each_cell():
    def build(**fields):
        return build_layer(ModelConfig(hidden_size=H, **fields), IN)

    assert isinstance(build(cell="rnn"), RNNLayer)
    assert build(cell="rnn", nonlinearity="relu").nonlinearity == "relu"
    assert isinstance(build(cell="gru"), GRULayer)
    assert isinstance(build(cell="gru", gru_variant="cudnn"), CudnnGRULayer)
    assert isinstance(build(cell="lstm"), LSTMLayer)
    esn = build(cell="esn", nonlinearity="relu", spectral_radius=0.5)
    assert isinstance(esn, ESNLayer) and (esn.nonlinearity, esn.spectral_radius) == ("relu", 0.5)
    assert set(CELLS) == {"rnn", "gru", "lstm", "esn"}


def test_unknown_names_list_the_choices():
    with pytest.raises(ValueError, match="unknown cell 'transformer'; choose one of: rnn, gru, lstm, esn"):
        layer_class("transformer")
    with pytest.raises(ValueError, match="unknown nonlinearity 'sigmoid'; choose one of: tanh, relu"):
        RNNLayer(IN, H, nonlinearity="sigmoid")


@pytest.mark.parametrize("kind", ["lstm", "gru", "gru-cudnn"])
@pytest.mark.parametrize("steps", [1, T])
@pytest.mark.parametrize("loss_of", ["y", "final_c", "final_a"])
def test_hand_written_backward_equals_autograd_through_the_cell_loop(kind, steps, loss_of):
    """The lstm's and both GRUs' `forward` run a hand-written backward (`lstm_bptt`, `gru_bptt`); it must
    give the gradients autograd gives through the step-by-step `_cell` loop (`_run_reference`), also for a
    one-step window and for a loss that reads only one part of the output."""
    layer = _layer(kind)
    with torch.no_grad():  # non-trivial values for every parameter (the cudnn GRU's b_ca included)
        for parameter in layer.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    x = _input()[:steps].requires_grad_()
    state = tuple(s.requires_grad_() for s in _random_state(layer))
    results = []
    for run in (layer._run_fused, layer._run_reference):
        layer.zero_grad()
        y, final = run(x, state)
        picked = {"y": y, "final_a": final[0], "final_c": final[-1]}[loss_of]
        loss = (picked * torch.linspace(-1, 1, picked.numel(), dtype=picked.dtype).view_as(picked)).sum()
        inputs = (x, *state, *layer.parameters())
        results.append((y, final, torch.autograd.grad(loss, inputs)))
    (y, final, grads), (y_ref, final_ref, grads_ref) = results
    assert_close((y, final), (y_ref, final_ref))
    for got, expected in zip(grads, grads_ref, strict=True):
        assert_close(got, expected)


@pytest.mark.parametrize("kind", ["lstm", "gru", "gru-cudnn"])
def test_hand_written_windows_run_under_bf16_autocast(kind):
    """Under autocast (the trainer's `precision: bf16`; CPU autocast stands in for CUDA's) the window runs
    in bf16 and the fp32 weights get fp32 gradients close to the fp32 run's."""
    layer = _layer(kind).float()
    x = _input().float()
    grads = []
    for autocast in (False, True):
        layer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y, final = layer(x)
        assert y.dtype == (torch.bfloat16 if autocast else torch.float32)
        (y.float().sum() + final[-1].float().sum()).backward()
        grads.append([parameter.grad.clone() for parameter in layer.parameters()])
    for fp32, bf16 in zip(*grads, strict=True):
        assert bf16.dtype == torch.float32
        assert_close(bf16, fp32, atol=0.05, rtol=0.05)
