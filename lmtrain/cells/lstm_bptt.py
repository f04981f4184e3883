"""The LSTM's time loop with a hand-written backward pass through time.

Autograd through a Python loop of ``LSTMLayer._cell`` records about a dozen small operations per step and,
in backward, computes the recurrent weight's gradient ``dW_aa`` as T separate ``[4H, B] x [B, H]``
products that it then sums. Here the forward loop runs without autograd and keeps only what backward
needs, per step the four activated gates and ``C<t>`` (5H numbers per sequence and step); the backward loop
computes the gradient of the gate pre-activations step by step (the only part that must be sequential),
and after it ``dW_aa`` is one ``[4H, T*B] x [T*B, H]`` product, the way fused kernels (cuDNN, oneDNN) do it.

Notation of ``LSTMLayer``: gates u, f, C̃, o stacked in that order along the last dimension; with
``z = x_proj<t> + a<t-1> W_aa^T`` the pre-activations,

    Γ_u, Γ_f, Γ_o = σ(z_u), σ(z_f), σ(z_o)     C̃ = tanh(z_C̃)
    C<t> = Γ_u * C̃ + Γ_f * C<t-1>              a<t> = Γ_o * tanh(C<t>)

and backward, with ``da = dy<t> + dz<t+1> W_aa`` and ``dC`` carried from step t+1:

    dC   += da * Γ_o * (1 - tanh(C<t>)^2)
    dz_u  = dC * C̃ * Γ_u (1 - Γ_u)             dz_f = dC * C<t-1> * Γ_f (1 - Γ_f)
    dz_C̃  = dC * Γ_u * (1 - C̃^2)               dz_o = da * tanh(C<t>) * Γ_o (1 - Γ_o)
    dC<t-1> = dC * Γ_f
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


def lstm_window(x_proj: Tensor, a0: Tensor, c0: Tensor, weight_aa: Tensor) -> tuple[Tensor, Tensor]:
    """Run the LSTM over a window.

    Args:
        x_proj: ``[T, B, 4H]``, the input half ``W_ax x<t> + b`` of every step.
        a0, c0: ``[B, H]``, the state before the first step.
        weight_aa: ``[4H, H]``.

    Returns:
        ``y`` ``[T, B, H]`` (``y[t] = a<t>``) and ``C<T>`` ``[B, H]``; ``a<T>`` is ``y[-1]``.
    """
    return _LSTMWindow.apply(x_proj, a0, c0, weight_aa)


class _LSTMWindow(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_proj: Tensor, a0: Tensor, c0: Tensor, weight_aa: Tensor) -> tuple[Tensor, Tensor]:
        steps, batch, _ = x_proj.shape
        hidden = weight_aa.shape[1]
        recurrent = weight_aa.t()  # [H, 4H], a view
        gates = torch.empty_like(x_proj)  # activated gates Γ_u, Γ_f, C̃, Γ_o of every step: [T, B, 4H]
        cells = x_proj.new_empty(steps, batch, hidden)  # C<t>: [T, B, H]
        tanh_cells = x_proj.new_empty(steps, batch, hidden)  # tanh(C<t>), kept so backward need not redo it
        y = x_proj.new_empty(steps, batch, hidden)  # a<t>: [T, B, H]
        a, c = a0, c0
        for t in range(steps):
            z = torch.addmm(x_proj[t], a, recurrent, out=gates[t])  # [B, 4H]
            torch.sigmoid(z[:, : 2 * hidden], out=z[:, : 2 * hidden])  # Γ_u, Γ_f
            torch.tanh(z[:, 2 * hidden : 3 * hidden], out=z[:, 2 * hidden : 3 * hidden])  # C̃
            torch.sigmoid(z[:, 3 * hidden :], out=z[:, 3 * hidden :])  # Γ_o
            update, forget, candidate, output = z.chunk(4, dim=1)
            c = torch.addcmul(forget * c, update, candidate, out=cells[t])  # C<t>
            a = torch.mul(output, torch.tanh(c, out=tanh_cells[t]), out=y[t])  # a<t>
        ctx.save_for_backward(gates, cells, tanh_cells, y, a0, c0, weight_aa)
        return y, cells[-1]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: Tensor | None, grad_c: Tensor | None):
        gates, cells, tanh_c, y, a0, c0, weight_aa = ctx.saved_tensors
        steps, batch, hidden = y.shape
        grad_y = torch.zeros_like(y) if grad_y is None else grad_y
        grad_c = torch.zeros_like(c0) if grad_c is None else grad_c.clone()
        # Everything that does not depend on the recursion, for all T steps at once and mostly in place
        # (few large operations and few temporaries instead of many small operations inside the loop).
        # σ' = σ (1 - σ) is computed as addcmul(σ, σ, σ, value=-1).
        update, forget, candidate, output = gates.chunk(4, dim=2)  # [T, B, H] each
        to_cell = torch.mul(tanh_c, tanh_c).neg_().add_(1).mul_(output)  # dC<t>/da<t> = Γ_o (1 - tanh²)
        to_output = torch.addcmul(output, output, output, value=-1).mul_(tanh_c)  # dz_o/da<t>
        # dz_u, dz_f, dz_C̃ per unit of dC<t>, as [T, B, 3, H] to match the first 3H of dz<t>.
        from_cell = gates.new_empty(steps, batch, 3, hidden)
        torch.addcmul(update, update, update, value=-1, out=from_cell[:, :, 0]).mul_(candidate)
        d_forget = torch.addcmul(forget, forget, forget, value=-1, out=from_cell[:, :, 1])
        d_forget[1:].mul_(cells[:-1])  # times C<t-1>
        d_forget[0].mul_(c0)
        torch.mul(candidate, candidate, out=from_cell[:, :, 2]).neg_().add_(1).mul_(update)
        grad_z = torch.empty_like(gates)  # dz<t>: [T, B, 4H]
        grad_a = torch.zeros_like(a0)  # the part of da<t> that comes from step t+1: dz<t+1> W_aa
        for t in range(steps - 1, -1, -1):
            da = grad_y[t] + grad_a
            grad_c.addcmul_(da, to_cell[t])  # dC<t>
            dz = grad_z[t]
            torch.mul(from_cell[t], grad_c.unsqueeze(1), out=dz[:, : 3 * hidden].view(batch, 3, hidden))
            torch.mul(da, to_output[t], out=dz[:, 3 * hidden :])
            grad_c.mul_(forget[t])  # dC<t-1>
            grad_a = torch.mm(dz, weight_aa)  # [B, 4H] x [4H, H]
        # dW_aa = sum over t of dz<t>^T a<t-1>: one [4H, T*B] x [T*B, H] product.
        grad_weight = torch.mm(grad_z[0].t(), a0)
        if steps > 1:
            grad_weight.addmm_(grad_z[1:].reshape(-1, 4 * hidden).t(), y[:-1].reshape(-1, hidden))
        return grad_z, grad_a, grad_c, grad_weight
