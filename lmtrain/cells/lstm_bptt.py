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

Gate order inside this module: the parameters stack the gates u, f, C̃, o (torch's order), but here the
rows are rotated to o, u, f, C̃ (``output_gate_first``), a copy of the weights per call that pays for
itself: the three sigmoid gates are one contiguous block (one ``sigmoid_`` per step instead of two), and
the three gates whose gradient is ``dC`` times a factor are one contiguous block too (one multiply per
step in backward). Gradients are rotated back before they leave.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from lmtrain.cells.base import apply_under_autocast
from lmtrain.cells.step_product import StepProduct


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


def output_gate_first(stacked: Tensor, candidate_scale: float = 1.0) -> Tensor:
    """Rows (or gradient rows) stacked u, f, C̃, o -> o, u, f, C̃; the C̃ rows times ``candidate_scale``."""
    hidden = stacked.shape[0] // 4
    candidate = stacked[2 * hidden : 3 * hidden]
    if candidate_scale != 1.0:
        candidate = candidate * candidate_scale
    return torch.cat([stacked[3 * hidden :], stacked[: 2 * hidden], candidate])


def output_gate_last(stacked: Tensor) -> Tensor:
    """The inverse of ``output_gate_first``: o, u, f, C̃ -> u, f, C̃, o (a contiguous copy)."""
    hidden = stacked.shape[0] // 4
    return torch.cat([stacked[hidden:], stacked[:hidden]])


class _LSTMWindow(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight_ax, bias, weight_aa, a0, c0):
        steps, batch, _ = x.shape
        hidden = weight_aa.shape[1]
        # Rows rotated to o, u, f, C̃ with the C̃ rows doubled: tanh(z) = 2σ(2z) - 1, so one sigmoid over
        # each step's whole (contiguous) row activates all four gates. torch's tanh is the slowest
        # elementwise operation of the step on some CPUs (4 ns per element against sigmoid's 1.2 on the
        # README's), and a slice of the row is slower still.
        weight_ax_2, bias_2, weight_aa_2 = (
            output_gate_first(w, candidate_scale=2.0) for w in (weight_ax, bias, weight_aa)
        )
        # The input half of every step's pre-activation in one product; the loop adds the recurrent half.
        # gates ends as the activated gates Γ_o, Γ_u, Γ_f, C̃ of every step: [T, B, 4H].
        flat_x = x.reshape(steps * batch, -1)
        gates = torch.addmm(bias_2, flat_x, weight_ax_2.t()).view(steps, batch, 4 * hidden)
        recurrent = StepProduct(weight_aa_2, batch)  # z<t> + a<t-1> W_aa^T at every step
        del weight_ax_2, bias_2, weight_aa_2
        cells = x.new_empty(steps, batch, hidden)  # C<t>
        tanh_cells = x.new_empty(steps, batch, hidden)  # tanh(C<t>), kept so backward need not redo it
        y = x.new_empty(steps, batch, hidden)  # a<t>
        # Every step's views are made once here (a call per step costs more than its arithmetic at small
        # H); the loop then makes 7 torch calls per step.
        output, update, forget, squashed = gates.view(steps, batch, 4, hidden).unbind(2)  # [T, B, H] each
        per_step = zip(
            gates, output, update, forget, squashed, cells, tanh_cells, y, strict=True
        )  # [B, 4H], then [B, H] each
        a, c = a0, c0
        for z, output_t, update_t, forget_t, squashed_t, c_t, tanh_c_t, a_t in per_step:
            torch.sigmoid(recurrent(a, z), out=z)  # Γ_o, Γ_u, Γ_f and s = σ(2 z_C̃), so C̃ = 2s - 1
            # C<t> = Γ_f C<t-1> + Γ_u C̃ = Γ_f C<t-1> + 2 Γ_u s - Γ_u
            c = torch.mul(forget_t, c, out=c_t).addcmul_(update_t, squashed_t, value=2).sub_(update_t)
            a = torch.mul(output_t, torch.tanh(c, out=tanh_c_t), out=a_t)  # a<t>
        squashed.mul_(2).sub_(1)  # C̃ = 2s - 1 for every step at once: gates holds Γ_o, Γ_u, Γ_f, C̃
        # The weights are saved as they came (parameters: no copy held until backward) and rotated there.
        ctx.save_for_backward(x, weight_ax, weight_aa, gates, cells, tanh_cells, y, a0, c0)
        return y, cells[-1]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y, grad_c):
        x, weight_ax, weight_aa, gates, cells, tanh_c, y, a0, c0 = ctx.saved_tensors
        steps, batch, hidden = y.shape
        weight_ax, weight_aa = output_gate_first(weight_ax), output_gate_first(weight_aa)
        grad_y = torch.zeros_like(y) if grad_y is None else grad_y
        grad_c = torch.zeros_like(c0) if grad_c is None else grad_c.clone()  # dC, carried backwards
        # Everything that does not depend on the recursion, for all T steps at once and mostly in place
        # (few large operations instead of many small ones inside the loop).
        # σ' = σ (1 - σ) is computed as addcmul(σ, σ, σ, value=-1).
        output, update, forget, candidate = gates.view(steps, batch, 4, hidden).unbind(2)  # [T, B, H]
        to_cell = torch.mul(tanh_c, tanh_c).neg_().add_(1).mul_(output)  # dC<t>/da<t> = Γ_o (1 - tanh²)
        to_output = torch.addcmul(output, output, output, value=-1).mul_(tanh_c)  # dz_o/da<t>
        # dz_u, dz_f, dz_C̃ per unit of dC<t>, as [T, B, 3, H] to match the last 3H of dz<t>.
        from_cell = gates.new_empty(steps, batch, 3, hidden)
        torch.addcmul(update, update, update, value=-1, out=from_cell[:, :, 0]).mul_(candidate)
        d_forget = torch.addcmul(forget, forget, forget, value=-1, out=from_cell[:, :, 1])
        d_forget[1:].mul_(cells[:-1])  # times C<t-1>
        d_forget[0].mul_(c0)
        torch.mul(candidate, candidate, out=from_cell[:, :, 2]).neg_().add_(1).mul_(update)
        grad_z = torch.empty_like(gates)  # dz<t>: [T, B, 4H], gates o, u, f, C̃
        recurrent = StepProduct(weight_aa.t(), batch)  # dy<t-1> + dz<t> W_aa at every step
        # Every step's views once (see forward): dz<t> as its output-gate part [B, H] and the other three
        # [B, 3, H]; dC is updated in place and read through a [B, 1, H] view.
        grad_output = grad_z[:, :, :hidden]  # [T, B, H]
        grad_cell_gates = grad_z[:, :, hidden:].view(steps, batch, 3, hidden)  # [T, B, 3, H]
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
        da = grad_y[-1]  # da<T-1> = dy<T-1>; earlier steps add dz<t+1> W_aa (the product at the bottom)
        for dz, dz_output, dz_cell_gates, to_cell_t, to_output_t, from_cell_t, forget_t, dy_prev in reversed(
            list(per_step)
        ):
            grad_c.addcmul_(da, to_cell_t)  # dC<t>
            torch.mul(da, to_output_t, out=dz_output)
            torch.mul(from_cell_t, grad_c_rows, out=dz_cell_gates)
            grad_c.mul_(forget_t)  # dC<t-1>
            if dy_prev is not None:
                da = recurrent(dz, dy_prev)  # [B, 4H] x [4H, H]
        needs = ctx.needs_input_grad
        flat_z = grad_z.view(steps * batch, 4 * hidden)
        grad_x = grad_weight_ax = grad_bias = grad_weight_aa = grad_a0 = None
        if needs[0]:
            grad_x = torch.mm(flat_z, weight_ax).view_as(x)
        # The weight gradients are computed transposed, dW^T = x^T dz ([E, T*B] x [T*B, 4H]), which MKL
        # runs up to 1.4x faster than dz^T x at small batches; output_gate_last's copy transposes back.
        if needs[1]:
            grad_weight_ax = output_gate_last(torch.mm(x.reshape(steps * batch, -1).t(), flat_z).t())
        if needs[2]:
            grad_bias = output_gate_last(flat_z.sum(0))
        if needs[3]:
            # dW_aa = sum over t of dz<t>^T a<t-1>: one [4H, T*B] x [T*B, H] product (and a<-1> = a0).
            grad_weight_aa = torch.mm(a0.t(), grad_z[0])
            if steps > 1:
                grad_weight_aa.addmm_(y[:-1].reshape(-1, hidden).t(), flat_z[batch:])
            grad_weight_aa = output_gate_last(grad_weight_aa.t())
        if needs[4]:
            grad_a0 = torch.mm(grad_z[0], weight_aa)
        return grad_x, grad_weight_ax, grad_bias, grad_weight_aa, grad_a0, grad_c
