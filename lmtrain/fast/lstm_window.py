"""The LSTM over a whole window as one autograd function, with a hand-written backward pass through time.

Autograd through a Python loop of ``LSTMLayer._cell`` records about a dozen small operations per step and,
in backward, computes the recurrent weight's gradient ``dW_aa`` as T separate ``[4H, B] x [B, H]``
products that it then sums. Here the forward loop runs without autograd and keeps only what backward
needs; the backward loop computes the gradient of the gate pre-activations step by step (the only part
that must be sequential), and after it every weight gradient is one matrix product over all T*B tokens,
the way fused kernels (cuDNN, oneDNN) do it.

Notation of ``LSTMLayer``, with ``z<t> = W_ax x<t> + b + W_aa a<t-1>`` the pre-activations:

    Γ_u, Γ_f, Γ_o = σ(z_u), σ(z_f), σ(z_o)     C̃ = tanh(z_C̃)
    C<t> = Γ_u * C̃ + Γ_f * C<t-1>              a<t> = Γ_o * tanh(C<t>)

and backward, with ``da = dy<t> + dz<t+1> W_aa`` and ``dC`` carried from step t+1:

    dC   += da * Γ_o * (1 - tanh(C<t>)^2)
    dz_o  = da * tanh(C<t>) * Γ_o (1 - Γ_o)
    dz_u  = dC * C̃ * Γ_u (1 - Γ_u)             dz_f = dC * C<t-1> * Γ_f (1 - Γ_f)
    dz_C̃  = dC * Γ_u * (1 - C̃^2)
    dC<t-1> = dC * Γ_f

The loops come in two implementations of the same equations. For fp32 tensors on the CPU, where
lmtrain's C kernels build (``lmtrain.fast.kernels``; one compile per machine, cached), each step is one matrix
product plus one C call that does the whole gate arithmetic in one pass (``_forward_loop_fused``,
``_backward_loop_fused``; the backward recomputes tanh(C<t>) rather than storing it). Everywhere else
(float64, CUDA, bf16 autocast, no C compiler, ``LMTRAIN_KERNELS=torch``) the torch loops below run it.

Layout inside the torch loops: the gates stay in the parameters' order u, f, C̃, o (torch's), which keeps
the three gates whose gradient is ``dC`` times a factor (u, f, C̃) one contiguous block: one multiply per
step in backward. Forward uses ``tanh(z) = 2σ(2z) - 1``: with the C̃ pre-activations doubled, one
sigmoid over each step's whole contiguous row activates all four gates (torch's CPU ``tanh`` costs
several times ``sigmoid``'s per element, and a slice of the row is slower still). The doubling is done
once per window, on the input projection of all steps and on a copy of ``W_aa`` (``candidate_doubled``),
and ``C̃ = 2s - 1`` is restored for all steps after the loop.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from lmtrain.fast.autocast import apply_under_autocast
from lmtrain.fast.kernels import fused_applies
from lmtrain.fast.kernels.lstm import LSTMStepKernels, lstm_step_kernels
from lmtrain.fast.step_product import StepProduct
from lmtrain.fast.weight_gradient import input_gradient, weight_gradient


def lstm_window(
    x: Tensor, weight_ax: Tensor, bias: Tensor, weight_aa: Tensor, a0: Tensor, c0: Tensor
) -> tuple[Tensor, Tensor]:
    """Run the LSTM over a window.

    Args:
        x: ``[T, B, E]``, the inputs of every step.
        weight_ax: ``[4H, E]``, bias: ``[4H]``, weight_aa: ``[4H, H]``, gates stacked u, f, C̃, o.
        a0, c0: ``[B, H]``, the state before the first step.

    Returns:
        ``y`` ``[T, B, H]`` (``y[t] = a<t>``) and ``C<T>`` ``[B, H]``; ``a<T>`` is ``y[-1]``.
    """
    return apply_under_autocast(_LSTMWindow, x, weight_ax, bias, weight_aa, a0, c0)


def candidate_doubled(stacked: Tensor) -> Tensor:
    """A copy of the rows (or entries) stacked u, f, C̃, o with the C̃ block times 2."""
    hidden = stacked.shape[0] // 4
    return torch.cat([stacked[: 2 * hidden], 2 * stacked[2 * hidden : 3 * hidden], stacked[3 * hidden :]])


class _LSTMWindow(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight_ax, bias, weight_aa, a0, c0):
        steps, batch, _ = x.shape
        hidden = weight_aa.shape[1]
        kernels = lstm_step_kernels() if fused_applies(x, weight_ax, weight_aa, a0, c0) else None
        # The input half of every step's pre-activation in one product; the loop adds the recurrent half.
        # gates ends as the activated gates Γ_u, Γ_f, C̃, Γ_o of every step: [T, B, 4H].
        flat_x = x.reshape(steps * batch, -1)
        gates = torch.addmm(bias, flat_x, weight_ax.t()).view(steps, batch, 4 * hidden)
        if kernels is None:
            cells, tanh_cells, y = _forward_loop(gates, weight_aa, a0, c0)
        else:
            cells, y = _forward_loop_fused(kernels, gates, weight_aa, a0, c0.contiguous())
            tanh_cells = None  # the backward kernel recomputes tanh(C<t>) instead of storing it
        ctx.kernels = kernels
        ctx.save_for_backward(x, weight_ax, weight_aa, gates, cells, tanh_cells, y, a0, c0)
        return y, cells[-1]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y, grad_c):
        x, weight_ax, weight_aa, gates, cells, tanh_cells, y, a0, c0 = ctx.saved_tensors
        grad_y = torch.zeros_like(y) if grad_y is None else grad_y
        grad_c = torch.zeros_like(c0) if grad_c is None else grad_c.clone()  # dC, carried backwards
        if ctx.kernels is None:
            grad_z = _backward_loop(gates, cells, tanh_cells, y, weight_aa, c0, grad_y, grad_c)
        else:
            grad_c = grad_c.contiguous()
            grad_z = _backward_loop_fused(
                ctx.kernels, gates, cells, weight_aa, c0.contiguous(), grad_y.contiguous(), grad_c
            )
        return (*_parameter_gradients(ctx.needs_input_grad, x, weight_ax, weight_aa, grad_z, y, a0), grad_c)


def _forward_loop(gates: Tensor, weight_aa: Tensor, a0: Tensor, c0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The recursion in torch: ``gates`` ``[T, B, 4H]`` holds the input half of the pre-activations and is
    overwritten with the activated gates. Returns C<t>, tanh(C<t>) and a<t> of every step, ``[T, B, H]``."""
    steps, batch, _ = gates.shape
    hidden = weight_aa.shape[1]
    hidden_blocks = gates.view(steps, batch, 4, hidden)  # [T, B, 4, H]
    hidden_blocks[:, :, 2].mul_(2)  # the C̃ block doubled: one sigmoid per row activates all four gates
    recurrent = StepProduct(candidate_doubled(weight_aa), batch, steps)  # z<t> + a<t-1> W_aa^T at every step
    cells = gates.new_empty(steps, batch, hidden)  # C<t>
    tanh_cells = gates.new_empty(steps, batch, hidden)  # tanh(C<t>), kept so backward need not redo it
    y = gates.new_empty(steps, batch, hidden)  # a<t>
    # Every step's views are made once here (a call per step costs more than its arithmetic at small
    # H); the loop then makes 7 torch calls per step.
    update, forget, squashed, output = hidden_blocks.unbind(2)  # [T, B, H] each
    per_step = zip(
        gates, update, forget, squashed, output, cells, tanh_cells, y, strict=True
    )  # [B, 4H], [B, H]
    a, c = a0, c0
    for z, update_t, forget_t, squashed_t, output_t, c_t, tanh_c_t, a_t in per_step:
        torch.sigmoid(recurrent(a, z), out=z)  # Γ_u, Γ_f, s = σ(2 z_C̃) (so C̃ = 2s - 1), Γ_o
        # C<t> = Γ_f C<t-1> + Γ_u C̃ = Γ_f C<t-1> + 2 Γ_u s - Γ_u
        c = torch.mul(forget_t, c, out=c_t).addcmul_(update_t, squashed_t, value=2).sub_(update_t)
        a = torch.mul(output_t, torch.tanh(c, out=tanh_c_t), out=a_t)  # a<t>
    squashed.mul_(2).sub_(1)  # C̃ = 2s - 1 for every step at once: gates holds Γ_u, Γ_f, C̃, Γ_o
    return cells, tanh_cells, y


def _forward_loop_fused(
    kernels: LSTMStepKernels, gates: Tensor, weight_aa: Tensor, a0: Tensor, c0: Tensor
) -> tuple[Tensor, Tensor]:
    """``_forward_loop`` with the gate arithmetic in one C call per step. Returns C<t> and a<t>."""
    steps, batch, _ = gates.shape
    hidden = weight_aa.shape[1]
    recurrent = StepProduct(weight_aa, batch, steps)
    cells = gates.new_empty(steps, batch, hidden)
    y = gates.new_empty(steps, batch, hidden)
    product = gates.new_empty(batch, 4 * hidden)  # a<t-1> W_aa^T, one buffer for every step
    a, c = a0, c0
    for z, c_t, a_t in zip(gates, cells, y, strict=True):  # [B, 4H], [B, H], [B, H]
        # the kernel adds the recurrent product to the input half in z and activates
        kernels.forward(recurrent(a, out=product), z, c, c_t, a_t)
        a, c = a_t, c_t
    return cells, y


def _backward_loop(
    gates: Tensor,
    cells: Tensor,
    tanh_c: Tensor,
    y: Tensor,
    weight_aa: Tensor,
    c0: Tensor,
    grad_y: Tensor,
    grad_c: Tensor,
) -> Tensor:
    """dL/dz<t> ``[T, B, 4H]`` of every step, in torch; ``grad_c`` (dL/dC<T-1>) ends as dL/dC<-1>."""
    steps, batch, hidden = y.shape
    # Everything that does not depend on the recursion, for all T steps at once, in as few passes over
    # [T, B, H] as the identities allow (few large operations instead of many small ones in the loop;
    # each pass reads and writes memory). With a<t> = Γ_o tanh(C<t>), which is y:
    #   dC<t>/da<t> = Γ_o (1 - tanh²) = Γ_o - a tanh          dz_o/da<t> = σ'(z_o) tanh = a - Γ_o a
    #   dz_u/dC = σ'(z_u) C̃ = Γ_u C̃ - Γ_u (Γ_u C̃)             dz_C̃/dC = Γ_u (1 - C̃²) = Γ_u - (Γ_u C̃) C̃
    #   dz_f/dC = σ'(z_f) C<t-1> = (Γ_f - Γ_f²) C<t-1>
    update, forget, candidate, output = gates.view(steps, batch, 4, hidden).unbind(2)  # [T, B, H]
    to_cell = torch.addcmul(output, y, tanh_c, value=-1)
    to_output = torch.addcmul(y, output, y, value=-1)
    # dz_u, dz_f, dz_C̃ per unit of dC<t>, as [T, B, 3, H] to match the first 3H of dz<t>.
    from_cell = gates.new_empty(steps, batch, 3, hidden)
    update_candidate = torch.mul(update, candidate)  # Γ_u C̃
    torch.addcmul(update_candidate, update, update_candidate, value=-1, out=from_cell[:, :, 0])
    d_forget = torch.addcmul(forget, forget, forget, value=-1, out=from_cell[:, :, 1])
    d_forget[1:].mul_(cells[:-1])  # times C<t-1>
    d_forget[0].mul_(c0)
    torch.addcmul(update, update_candidate, candidate, value=-1, out=from_cell[:, :, 2])
    del update_candidate
    grad_z = torch.empty_like(gates)  # dz<t>: [T, B, 4H], gates u, f, C̃, o
    recurrent = StepProduct(weight_aa.t(), batch, steps)  # dy<t-1> + dz<t> W_aa at every step
    # Every step's views once (see _forward_loop): dz<t> as its u, f, C̃ part [B, 3, H] and its output-gate
    # part [B, H]; dC is updated in place and read through a [B, 1, H] view.
    grad_cell_gates = grad_z[:, :, : 3 * hidden].view(steps, batch, 3, hidden)  # [T, B, 3, H]
    grad_output = grad_z[:, :, 3 * hidden :]  # [T, B, H]
    grad_c_rows = grad_c.unsqueeze(1)  # [B, 1, H], the same memory as grad_c
    previous_grad_y = [None, *grad_y[:-1].unbind(0)]  # dy<t-1>; nothing before the first step
    per_step = zip(
        grad_z,
        grad_output,
        grad_cell_gates,
        to_cell,
        to_output,
        from_cell,
        forget,
        previous_grad_y,
        strict=True,
    )
    backwards = reversed(list(per_step))  # step T-1 first
    da = grad_y[-1]  # da<T-1> = dy<T-1>; earlier steps add dz<t+1> W_aa (the product at the bottom)
    for dz, dz_output, dz_cell_gates, to_cell_t, to_output_t, from_cell_t, forget_t, dy_prev in backwards:
        grad_c.addcmul_(da, to_cell_t)  # dC<t>
        torch.mul(da, to_output_t, out=dz_output)
        torch.mul(from_cell_t, grad_c_rows, out=dz_cell_gates)
        grad_c.mul_(forget_t)  # dC<t-1>
        if dy_prev is not None:
            da = recurrent(dz, dy_prev)  # [B, 4H] x [4H, H]
    return grad_z


def _backward_loop_fused(
    kernels: LSTMStepKernels,
    gates: Tensor,
    cells: Tensor,
    weight_aa: Tensor,
    c0: Tensor,
    grad_y: Tensor,
    grad_c: Tensor,
) -> Tensor:
    """``_backward_loop`` with the gate arithmetic in one C call per step (which recomputes tanh(C<t>))."""
    steps, batch, _ = gates.shape
    grad_z = torch.empty_like(gates)
    recurrent = StepProduct(weight_aa.t(), batch, steps)
    previous_cells = [c0, *cells[:-1].unbind(0)]  # C<t-1>
    per_step = zip(gates, previous_cells, cells, grad_z, grad_y, strict=True)
    from_next_step = torch.zeros_like(grad_c)  # dz<t+1> W_aa, the part of dL/da<t> from later steps
    for t, (gates_t, c_prev, c_t, dz, dy) in reversed(list(enumerate(per_step))):
        kernels.backward(gates_t, c_prev, c_t, from_next_step, dy, grad_c, dz)  # dz<t>; grad_c <- dC<t-1>
        if t > 0:
            recurrent(dz, out=from_next_step)  # [B, 4H] x [4H, H]; the kernel has read it
    return grad_z


def _parameter_gradients(
    needs: tuple[bool, ...],
    x: Tensor,
    weight_ax: Tensor,
    weight_aa: Tensor,
    grad_z: Tensor,
    y: Tensor,
    a0: Tensor,
) -> tuple[Tensor | None, ...]:
    """The gradients of x, weight_ax, bias, weight_aa and a0 from dL/dz<t> of every step, each one matrix
    product over all T*B tokens (None where ``needs`` says it is not wanted)."""
    steps, batch, hidden = y.shape
    flat_z = grad_z.view(steps * batch, 4 * hidden)
    grad_x = grad_weight_ax = grad_bias = grad_weight_aa = grad_a0 = None
    if needs[0]:
        grad_x = input_gradient(flat_z, weight_ax).view_as(x)
    if needs[2]:
        grad_bias = flat_z.sum(0)
    if needs[1]:
        grad_weight_ax = weight_gradient((x.reshape(steps * batch, -1), flat_z))
    if needs[3]:
        # dW_aa = sum over t of dz<t>^T a<t-1>: the steps after the first in one product (a<t-1> is
        # y[t-1]), and the first step's a<-1> = a0.
        grad_weight_aa = weight_gradient((y[:-1].reshape(-1, hidden), flat_z[batch:]), (a0, grad_z[0]))
    if needs[4]:
        grad_a0 = torch.mm(grad_z[0], weight_aa)
    return grad_x, grad_weight_ax, grad_bias, grad_weight_aa, grad_a0
