"""Both GRU variants over a whole window as autograd functions with hand-written backward passes through
time, built like ``lstm_bptt``: the forward loop runs without autograd and keeps only what backward needs,
the backward loop computes the gradients of the pre-activations step by step, and every weight gradient is
one matrix product over all T*B tokens after the loop.

Notation of ``GRULayer`` (the notes), gates stacked u, r, c̃; ``x_u, x_r, x_c`` are the input halves
``W_ax x<t> + b`` of the three blocks and ``W_u, W_r, W_c`` the blocks of ``W_aa``:

    Γ_u = σ(x_u + W_u c<t-1>)    Γ_r = σ(x_r + W_r c<t-1>)
    r<t> = Γ_r * c<t-1>          c̃ = tanh(x_c + W_c r<t>)
    c<t> = c<t-1> + Γ_u * (c̃ - c<t-1>)

backward, with ``dc`` the gradient of ``c<t>`` (``dy<t>`` plus what step t+1 sends back):

    dz_c = dc * Γ_u * (1 - c̃²)                dr = dz_c W_c
    dz_u = dc * (c̃ - c<t-1>) * Γ_u (1 - Γ_u)   dz_r = dr * c<t-1> * Γ_r (1 - Γ_r)
    dc<t-1> = dc * (1 - Γ_u) + dr * Γ_r + [dz_u, dz_r] [W_u; W_r]

Two matrix products per step in each direction, since ``W_c`` acts on ``r<t>``, which needs Γ_r first.

``CudnnGRULayer`` applies the reset gate after the product, ``c̃ = tanh(x_c + Γ_r * n)`` with
``n = W_c c<t-1> + b_ca``, so all three recurrent blocks are one product per step:

    dz_c = dc * Γ_u * (1 - c̃²)   (the gradient of x_c)       dn = dz_c * Γ_r
    dz_u as above                 dz_r = dz_c * n * Γ_r (1 - Γ_r)
    dc<t-1> = dc * (1 - Γ_u) + [dz_u, dz_r, dn] W_aa
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from lmtrain.fast.autocast import apply_under_autocast
from lmtrain.fast.kernels import fused_applies
from lmtrain.fast.kernels.gru import GRUStepKernels, gru_step_kernels
from lmtrain.fast.step_product import StepProduct
from lmtrain.fast.weight_gradient import input_gradient, weight_gradient


def gru_window(x: Tensor, weight_ax: Tensor, bias: Tensor, weight_aa: Tensor, c0: Tensor) -> Tensor:
    """The notes' GRU over a window: ``x`` ``[T, B, E]``, ``weight_ax`` ``[3H, E]``, ``bias`` ``[3H]``,
    ``weight_aa`` ``[3H, H]`` (blocks u, r, c̃), ``c0`` ``[B, H]`` -> ``y`` ``[T, B, H]`` (``y[t] = c<t>``)."""
    return apply_under_autocast(_GRUWindow, x, weight_ax, bias, weight_aa, c0)


def cudnn_gru_window(
    x: Tensor, weight_ax: Tensor, bias: Tensor, weight_aa: Tensor, candidate_bias: Tensor, c0: Tensor
) -> Tensor:
    """``CudnnGRULayer`` over a window; as ``gru_window`` plus ``candidate_bias`` ``[H]``, the ``b_ca``."""
    return apply_under_autocast(_CudnnGRUWindow, x, weight_ax, bias, weight_aa, candidate_bias, c0)


def previous_states(y: Tensor, initial: Tensor) -> Tensor:
    """The state before every step of a window, ``[T, B, H]``: ``initial`` (``[B, H]``), then ``y[:-1]``
    (the weight gradients multiply by it)."""
    return torch.cat([initial.unsqueeze(0), y[:-1]])


def _input_projection(x: Tensor, weight_ax: Tensor, bias: Tensor) -> Tensor:
    """``W_ax x<t> + b`` for every step in one product: ``[T, B, G*H]``."""
    steps, batch, _ = x.shape
    return torch.addmm(bias, x.reshape(steps * batch, -1), weight_ax.t()).view(steps, batch, -1)


def _input_gradients(ctx, grad_x_proj: Tensor, x: Tensor, weight_ax: Tensor):
    """The gradients of ``x``, ``weight_ax`` and ``bias`` from the input projection's, ``[T, B, G*H]``."""
    needs = ctx.needs_input_grad
    flat = grad_x_proj.reshape(-1, grad_x_proj.shape[-1])  # [T*B, G*H]
    grad_x = input_gradient(flat, weight_ax).view_as(x) if needs[0] else None
    grad_weight_ax = weight_gradient((x.reshape(flat.shape[0], -1), flat)) if needs[1] else None
    grad_bias = flat.sum(0) if needs[2] else None
    return grad_x, grad_weight_ax, grad_bias


def _forward_products(weight_aa: Tensor, batch: int, steps: int) -> tuple[StepProduct, StepProduct]:
    """The forward's two per-step products: ``c<t-1> [W_u; W_r]^T`` and ``r<t> W_c^T``."""
    hidden = weight_aa.shape[1]
    gates_from_state = StepProduct(weight_aa[: 2 * hidden], batch, steps)  # [B, H] x [H, 2H]
    candidate_from_reset = StepProduct(weight_aa[2 * hidden :], batch, steps)  # [B, H] x [H, H]
    return gates_from_state, candidate_from_reset


def _gru_forward_loop(gates: Tensor, weight_aa: Tensor, c0: Tensor, reset_states: Tensor, y: Tensor) -> None:
    """The recursion in torch: ``gates`` ``[T, B, 3H]`` holds the input halves and is overwritten with
    Γ_u, Γ_r, c̃; ``reset_states`` receives r<t> and ``y`` c<t> (``[T, B, H]`` each)."""
    steps, batch, hidden = y.shape
    gates_from_state, candidate_from_reset = _forward_products(weight_aa, batch, steps)
    c = c0
    for z, r_t, c_t in zip(gates, reset_states, y, strict=True):  # z: [B, 3H]
        gates_ur = z[:, : 2 * hidden]
        torch.sigmoid(gates_from_state(c, gates_ur), out=gates_ur)  # Γ_u, Γ_r
        update, reset, candidate = z.view(batch, 3, hidden).unbind(1)  # [B, H] each
        torch.mul(reset, c, out=r_t)
        torch.tanh(candidate_from_reset(r_t, candidate), out=candidate)  # c̃
        c = torch.lerp(c, candidate, update, out=c_t)  # c<t-1> + Γ_u (c̃ - c<t-1>)


def _gru_forward_loop_fused(
    kernels: GRUStepKernels, gates: Tensor, weight_aa: Tensor, c0: Tensor, reset_states: Tensor, y: Tensor
) -> None:
    """``_gru_forward_loop`` with each of the step's two elementwise passes in one C call."""
    steps, batch, _ = y.shape
    gates_from_state, candidate_from_reset = _forward_products(weight_aa, batch, steps)
    c = c0
    for z, r_t, c_t in zip(gates, reset_states, y, strict=True):  # z: [B, 3H]
        kernels.forward_gates(gates_from_state(c), z, c, r_t)  # Γ_u, Γ_r and r<t>
        kernels.forward_state(candidate_from_reset(r_t), z, c, c_t)  # c̃ and c<t>
        c = c_t


def _backward_products(weight_aa: Tensor, batch: int, steps: int) -> tuple[StepProduct, StepProduct]:
    """The backward's two per-step products: ``[dz_u, dz_r] [W_u; W_r]`` and ``dz_c W_c``."""
    hidden = weight_aa.shape[1]
    gates_to_state = StepProduct(weight_aa[: 2 * hidden].t(), batch, steps)  # [B, 2H] x [2H, H]
    candidate_to_reset = StepProduct(weight_aa[2 * hidden :].t(), batch, steps)  # [B, H] x [H, H]
    return gates_to_state, candidate_to_reset


def _gru_backward_loop(
    gates: Tensor, previous: Tensor, grad_y: Tensor, weight_aa: Tensor
) -> tuple[Tensor, Tensor]:
    """dL/dz<t> ``[T, B, 3H]`` of every step and dL/dc<-1>, in torch."""
    steps, batch, hidden = previous.shape
    gates_to_state, candidate_to_reset = _backward_products(weight_aa, batch, steps)
    # The factors that do not depend on the recursion, for all T steps at once.
    update, reset, candidate = gates.view(steps, batch, 3, hidden).unbind(2)  # [T, B, H] each
    to_candidate = torch.mul(candidate, candidate).neg_().add_(1).mul_(update)  # dz_c / dc
    to_update = _sigmoid_derivative(update).mul_(candidate - previous)  # dz_u / dc
    to_reset = _sigmoid_derivative(reset).mul_(previous)  # dz_r / dr
    keep = torch.neg(update).add_(1)  # 1 - Γ_u
    grad_z = torch.empty_like(gates)  # dz<t>: [T, B, 3H]
    dc = grad_y[-1].clone()
    for t in range(steps - 1, -1, -1):
        dz = grad_z[t]
        dz_update_reset = dz[:, : 2 * hidden]
        dz_candidate = torch.mul(dc, to_candidate[t], out=dz[:, 2 * hidden :])
        dr = candidate_to_reset(dz_candidate)  # [B, H]
        torch.mul(dc, to_update[t], out=dz[:, :hidden])
        torch.mul(dr, to_reset[t], out=dz[:, hidden : 2 * hidden])
        kept = torch.mul(dc, keep[t]).addcmul_(dr, reset[t])
        grad_previous = gates_to_state(dz_update_reset, kept)  # dc<t-1>
        dc = grad_previous.add_(grad_y[t - 1]) if t > 0 else grad_previous
    return grad_z, dc


def _gru_backward_loop_fused(
    kernels: GRUStepKernels, gates: Tensor, previous: Tensor, grad_y: Tensor, weight_aa: Tensor
) -> tuple[Tensor, Tensor]:
    """``_gru_backward_loop`` with each step's elementwise work in two C calls."""
    steps, batch, hidden = previous.shape
    gates_to_state, candidate_to_reset = _backward_products(weight_aa, batch, steps)
    grad_z = torch.empty_like(gates)
    no_output_gradient = torch.zeros_like(grad_y[0])  # dy<t-1> before the first step
    rest = torch.empty_like(grad_y[0])  # the part of dc<t-1> not through [W_u; W_r], reused every step
    dc = grad_y[-1].clone()
    for t in range(steps - 1, -1, -1):
        dz = grad_z[t]  # [B, 3H]
        kernels.backward_candidate(gates[t], dc, dz)
        dr = candidate_to_reset(dz[:, 2 * hidden :])  # dz_c W_c: [B, H]
        dy_prev = grad_y[t - 1] if t > 0 else no_output_gradient
        kernels.backward_gates(gates[t], previous[t], dc, dr, dy_prev, dz, rest)
        dc = gates_to_state(dz[:, : 2 * hidden], rest)  # dc<t-1>
    return grad_z, dc


def _sigmoid_derivative(gate: Tensor) -> Tensor:
    """σ' = σ (1 - σ), from σ."""
    return torch.addcmul(gate, gate, gate, value=-1)


class _GRUWindow(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight_ax, bias, weight_aa, c0):
        steps, batch, _ = x.shape
        hidden = weight_aa.shape[1]
        kernels = gru_step_kernels() if fused_applies(x, weight_ax, weight_aa, c0) else None
        # gates ends as the activated Γ_u, Γ_r, c̃ of every step: [T, B, 3H].
        gates = _input_projection(x, weight_ax, bias)
        reset_states = x.new_empty(steps, batch, hidden)  # r<t> = Γ_r * c<t-1>
        y = x.new_empty(steps, batch, hidden)  # c<t>
        if kernels is None:
            _gru_forward_loop(gates, weight_aa, c0, reset_states, y)
        else:
            _gru_forward_loop_fused(kernels, gates, weight_aa, c0.contiguous(), reset_states, y)
        ctx.kernels = kernels
        ctx.save_for_backward(x, weight_ax, weight_aa, gates, reset_states, y, c0)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, weight_ax, weight_aa, gates, reset_states, y, c0 = ctx.saved_tensors
        steps, batch, hidden = y.shape
        previous = previous_states(y, c0)  # c<t-1>
        if ctx.kernels is None:
            grad_z, dc = _gru_backward_loop(gates, previous, grad_y, weight_aa)
        else:
            grad_z, dc = _gru_backward_loop_fused(
                ctx.kernels, gates, previous, grad_y.contiguous(), weight_aa
            )
        grad_x, grad_weight_ax, grad_bias = _input_gradients(ctx, grad_z, x, weight_ax)
        grad_weight_aa = None
        if ctx.needs_input_grad[3]:
            # dW_u, dW_r = sum of dz_ur^T c<t-1>; dW_c = sum of dz_c^T r<t>.
            update_reset = weight_gradient(
                (previous.view(-1, hidden), grad_z[:, :, : 2 * hidden].reshape(-1, 2 * hidden))
            )
            from_reset = weight_gradient(
                (reset_states.view(-1, hidden), grad_z[:, :, 2 * hidden :].reshape(-1, hidden))
            )
            grad_weight_aa = torch.cat([update_reset, from_reset])  # [3H, H]
        return grad_x, grad_weight_ax, grad_bias, grad_weight_aa, dc


class _CudnnGRUWindow(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight_ax, bias, weight_aa, candidate_bias, c0):
        steps, batch, _ = x.shape
        hidden = weight_aa.shape[1]
        # gates ends as the activated Γ_u, Γ_r, c̃ of every step: [T, B, 3H].
        gates = _input_projection(x, weight_ax, bias)
        from_state = StepProduct(weight_aa, batch, steps)  # W_aa c<t-1>: [B, 3H]
        candidate_states = x.new_empty(steps, batch, hidden)  # n<t> = W_c c<t-1> + b_ca
        y = x.new_empty(steps, batch, hidden)  # c<t>
        c = c0
        for z, n_t, c_t in zip(gates, candidate_states, y, strict=True):  # z: [B, 3H]
            recurrent = from_state(c)
            z[:, : 2 * hidden].add_(recurrent[:, : 2 * hidden]).sigmoid_()  # Γ_u, Γ_r
            update, reset, candidate = z.view(batch, 3, hidden).unbind(1)  # [B, H] each
            n = torch.add(recurrent[:, 2 * hidden :], candidate_bias, out=n_t)
            candidate.addcmul_(reset, n).tanh_()  # c̃
            c = torch.lerp(c, candidate, update, out=c_t)  # c<t-1> + Γ_u (c̃ - c<t-1>)
        ctx.save_for_backward(x, weight_ax, weight_aa, gates, candidate_states, y, c0)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, weight_ax, weight_aa, gates, candidate_states, y, c0 = ctx.saved_tensors
        steps, batch, hidden = y.shape
        update, reset, candidate = gates.view(steps, batch, 3, hidden).unbind(2)  # [T, B, H] each
        previous = previous_states(y, c0)  # c<t-1>
        # Per unit of dc: the gradients of the recurrent product's three blocks, [T, B, 3, H] ...
        to_recurrent = gates.new_empty(steps, batch, 3, hidden)
        to_candidate = torch.mul(candidate, candidate).neg_().add_(1).mul_(update)  # dz_c / dc
        torch.mul(_sigmoid_derivative(update), candidate - previous, out=to_recurrent[:, :, 0])  # dz_u
        torch.mul(_sigmoid_derivative(reset), candidate_states, out=to_recurrent[:, :, 1]).mul_(to_candidate)
        torch.mul(to_candidate, reset, out=to_recurrent[:, :, 2])  # dn
        keep = torch.neg(update).add_(1)  # 1 - Γ_u
        grad_recurrent = torch.empty_like(gates)  # [dz_u, dz_r, dn] of every step: [T, B, 3H]
        grad_candidate = torch.empty_like(y)  # dz_c, the gradient of x_c: [T, B, H]
        to_state = StepProduct(weight_aa.t(), batch, steps)  # [dz_u, dz_r, dn] W_aa
        dc = grad_y[-1].clone()
        for t in range(steps - 1, -1, -1):
            torch.mul(to_recurrent[t], dc.unsqueeze(1), out=grad_recurrent[t].view(batch, 3, hidden))
            torch.mul(dc, to_candidate[t], out=grad_candidate[t])
            grad_previous = to_state(grad_recurrent[t], torch.mul(dc, keep[t]))  # dc<t-1>
            dc = grad_previous.add_(grad_y[t - 1]) if t > 0 else grad_previous
        # The input projection's gradient: dz_u, dz_r from grad_recurrent, dz_c from grad_candidate.
        grad_x_proj = torch.cat([grad_recurrent[:, :, : 2 * hidden], grad_candidate], dim=2)
        grad_x, grad_weight_ax, grad_bias = _input_gradients(ctx, grad_x_proj, x, weight_ax)
        flat_recurrent = grad_recurrent.view(-1, 3 * hidden)
        grad_weight_aa = grad_candidate_bias = None
        if ctx.needs_input_grad[3]:
            # dW_aa = sum of [dz_u, dz_r, dn]^T c<t-1>.
            grad_weight_aa = weight_gradient((previous.view(-1, hidden), flat_recurrent))
        if ctx.needs_input_grad[4]:
            grad_candidate_bias = flat_recurrent[:, 2 * hidden :].sum(0)
        return grad_x, grad_weight_ax, grad_bias, grad_weight_aa, grad_candidate_bias, dc
