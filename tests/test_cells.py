"""The recurrent layers against hand computations of the notes' equations and against torch's modules."""

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from lmtrain.cells import CELLS, GRULayer, LSTMLayer, RNNLayer, build_layer

T, B, IN, H = 3, 2, 3, 4


def _layer(cell: str, nonlinearity: str = "tanh") -> nn.Module:
    torch.manual_seed(0)
    return build_layer(cell, IN, H, nonlinearity=nonlinearity).double()


def _input(seed: int = 1) -> torch.Tensor:
    return torch.randn(T, B, IN, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _random_state(layer, seed: int = 2) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, dtype=torch.float64, generator=generator) for _ in range(layer.num_states))


# Hand computations: one sample at a time, with the stacked W_a = [W_aa | W_ax] acting on [a<t-1>, x<t>]
# exactly as the notes write it, and no code from lmtrain.cells.


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


def _by_hand(cell, layer, x, state):
    if state is None:
        state = tuple(torch.zeros(B, H, dtype=x.dtype) for _ in range(layer.num_states))
    if cell == "rnn":
        return _rnn_by_hand(layer, x, *state, g=torch.tanh)
    if cell == "relu":
        return _rnn_by_hand(layer, x, *state, g=torch.relu)
    if cell == "gru":
        return _gru_by_hand(layer, x, *state)
    return _lstm_by_hand(layer, x, *state)


@pytest.mark.parametrize("cell", ["rnn", "relu", "gru", "lstm"])
@pytest.mark.parametrize("nonzero_state", [False, True], ids=["zero_state", "given_state"])
@torch.no_grad()
def test_forward_matches_the_notes_equations(cell, nonzero_state):
    layer = _layer("rnn", "relu") if cell == "relu" else _layer(cell)
    x = _input()
    state = _random_state(layer) if nonzero_state else None

    y, final = layer(x, state)

    expected_y, expected_final = _by_hand(cell, layer, x, state)
    assert y.shape == (T, B, H)
    assert_close(y, expected_y)
    assert len(final) == layer.num_states
    for got, expected in zip(final, expected_final, strict=True):
        assert_close(got, expected)


@pytest.mark.parametrize("cell", list(CELLS))
def test_step_repeated_equals_forward(cell):
    layer = _layer(cell)
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


def _torch_module(cell: str, nonlinearity: str) -> nn.RNNBase:
    torch.manual_seed(3)
    if cell == "lstm":
        return nn.LSTM(IN, H).double()
    return nn.RNN(IN, H, nonlinearity=nonlinearity).double()


def _run_torch(module, x, state):
    # torch's state has a leading num_layers dimension of 1; ours does not.
    torch_state = tuple(s.unsqueeze(0) for s in state)
    y, torch_final = module(x, torch_state if isinstance(module, nn.LSTM) else torch_state[0])
    final = torch_final if isinstance(torch_final, tuple) else (torch_final,)
    return y, tuple(s.squeeze(0) for s in final)


def _loss(y, final):
    # Weigh every output and final state differently so no gradient hides behind a symmetric sum.
    weights = torch.linspace(-1.0, 1.0, y.numel(), dtype=y.dtype).reshape(y.shape)
    return (weights * y).sum() + sum((s**2).sum() for s in final)


@pytest.mark.parametrize(
    ("cell", "nonlinearity", "layer_class"),
    [("rnn", "tanh", RNNLayer), ("rnn", "relu", RNNLayer), ("lstm", "tanh", LSTMLayer)],
)
def test_from_torch_matches_outputs_and_gradients(cell, nonlinearity, layer_class):
    module = _torch_module(cell, nonlinearity)
    layer = layer_class.from_torch(module)
    x = _input().requires_grad_()
    x_ours = x.detach().clone().requires_grad_()
    state = _random_state(layer)

    y_torch, final_torch = _run_torch(module, x, state)
    y_ours, final_ours = layer(x_ours, state)
    assert_close(y_ours, y_torch)
    for ours, theirs in zip(final_ours, final_torch, strict=True):
        assert_close(ours, theirs)

    _loss(y_torch, final_torch).backward()
    _loss(y_ours, final_ours).backward()
    assert_close(x_ours.grad, x.grad)
    assert_close(layer.weight_ax.grad, module.weight_ih_l0.grad)
    assert_close(layer.weight_aa.grad, module.weight_hh_l0.grad)
    # Both torch biases are added to the same pre-activation, so each gets our bias's gradient.
    assert_close(layer.bias.grad, module.bias_ih_l0.grad)
    assert_close(layer.bias.grad, module.bias_hh_l0.grad)


@pytest.mark.parametrize(("cell", "nonlinearity"), [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh")])
@torch.no_grad()
def test_to_torch_round_trips(cell, nonlinearity):
    layer = _layer(cell, nonlinearity)
    x = _input()
    state = _random_state(layer)

    module = layer.to_torch()
    assert isinstance(module, nn.LSTM if cell == "lstm" else nn.RNN)
    assert (module.num_layers, module.bidirectional, module.batch_first) == (1, False, False)
    y_torch, final_torch = _run_torch(module, x, state)
    y_ours, final_ours = layer(x, state)
    assert_close(y_torch, y_ours)
    for theirs, ours in zip(final_torch, final_ours, strict=True):
        assert_close(theirs, ours)

    back = type(layer).from_torch(module)
    for name, parameter in layer.named_parameters():
        assert_close(getattr(back, name), parameter)
    assert back.weight_aa.dtype == torch.float64
    if cell == "rnn":
        assert back.nonlinearity == nonlinearity


def test_from_torch_sums_the_two_biases():
    module = _torch_module("lstm", "tanh")
    layer = LSTMLayer.from_torch(module)
    assert_close(layer.bias, module.bias_ih_l0 + module.bias_hh_l0)


def test_from_torch_accepts_a_module_without_bias():
    module = nn.RNN(IN, H, bias=False).double()
    layer = RNNLayer.from_torch(module)
    assert torch.count_nonzero(layer.bias) == 0


@pytest.mark.parametrize(
    ("layer_class", "module", "message"),
    [
        (RNNLayer, nn.RNN(IN, H, num_layers=2), "num_layers=2"),
        (RNNLayer, nn.RNN(IN, H, bidirectional=True), "bidirectional=True"),
        (LSTMLayer, nn.LSTM(IN, H, proj_size=2), "proj_size=2"),
        (LSTMLayer, nn.RNN(IN, H), "expects an nn.LSTM, got RNN"),
        (RNNLayer, nn.GRU(IN, H), "expects an nn.RNN, got GRU"),
    ],
)
def test_from_torch_refuses_what_it_cannot_reproduce(layer_class, module, message):
    with pytest.raises(ValueError, match=message):
        layer_class.from_torch(module)


@pytest.mark.parametrize("cell", list(CELLS))
def test_gradient_flows_through_the_state_to_the_first_input(cell):
    layer = _layer(cell)
    x = _input().requires_grad_()

    y, _ = layer(x)
    y[-1].sum().backward()

    assert torch.count_nonzero(x.grad[0]) > 0


@pytest.mark.parametrize("cell", list(CELLS))
def test_initial_state_is_zeros_of_the_right_shape(cell):
    layer = _layer(cell)
    state = layer.initial_state(B)
    assert isinstance(state, tuple)
    assert len(state) == layer.num_states == (2 if cell == "lstm" else 1)
    for tensor in state:
        assert tensor.shape == (B, H)
        assert tensor.dtype == torch.float64
        assert torch.count_nonzero(tensor) == 0


def test_parameter_shapes_and_lstm_forget_bias():
    for cell, gates in [("rnn", 1), ("gru", 3), ("lstm", 4)]:
        layer = _layer(cell)
        assert layer.weight_aa.shape == (gates * H, H)
        assert layer.weight_ax.shape == (gates * H, IN)
        assert layer.bias.shape == (gates * H,)
    lstm = _layer("lstm")
    assert torch.all(lstm.bias[H : 2 * H] == 1.0)
    bound = H**-0.5
    for parameter in (lstm.weight_aa, lstm.weight_ax, lstm.bias[:H], lstm.bias[2 * H :]):
        assert parameter.abs().max() <= bound


@pytest.mark.parametrize("cell", list(CELLS))
def test_bad_shapes_raise_value_error(cell):
    layer = _layer(cell)
    good_state = layer.initial_state(B)
    with pytest.raises(ValueError, match=r"input of shape \[T >= 1, B, input_size=3\], got \[3, 2, 5\]"):
        layer(torch.zeros(T, B, IN + 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"got \[2, 3\]"):
        layer(torch.zeros(B, IN, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"got \[0, 2, 3\]"):
        layer(torch.zeros(0, B, IN, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"state a of shape \[B=2, H=4\], got \[3, 4\]"):
        layer(_input(), tuple(torch.zeros(B + 1, H, dtype=torch.float64) for _ in good_state))
    with pytest.raises(ValueError, match="expects its state as a tuple"):
        layer(_input(), good_state[0])
    with pytest.raises(ValueError, match=r"step expects input of shape \[B, input_size=3\], got \[3, 2, 3\]"):
        layer.step(_input(), good_state)


def test_build_layer_builds_each_cell():
    assert isinstance(build_layer("rnn", IN, H), RNNLayer)
    assert build_layer("rnn", IN, H, nonlinearity="relu").nonlinearity == "relu"
    assert isinstance(build_layer("gru", IN, H), GRULayer)
    assert isinstance(build_layer("lstm", IN, H), LSTMLayer)


def test_build_layer_unknown_names_list_the_choices():
    with pytest.raises(ValueError, match="unknown cell 'transformer'; choose one of: rnn, gru, lstm"):
        build_layer("transformer", IN, H)
    with pytest.raises(ValueError, match="unknown nonlinearity 'sigmoid'; choose one of: tanh, relu"):
        build_layer("rnn", IN, H, nonlinearity="sigmoid")
