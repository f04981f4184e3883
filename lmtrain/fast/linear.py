"""The decoder's linear layer, its three products on the recurrent windows' fastest kernels.

The decoder maps every position's hidden state to the vocabulary's logits: ``[N, H] x [H, V]`` forward,
and backward the hidden states' gradient ``[N, V] x [V, H]`` and the weight's ``[V, N] x [N, H]``. At
the word model's size (N = 700, H = 650, V = 10,000) they are about half of a training step's arithmetic.
``nn.Linear`` runs them on MKL. On the CPUs where oneDNN multiplies faster (see
``lmtrain.fast.onednn_linear``: AVX-512, not Intel's) ``Linear`` sends each product there by the
windows' own rules; everywhere else (CUDA, float64, autocast, narrow or small products) it is
``nn.Linear``. Parameters, state dict and results (to float rounding) are ``nn.Linear``'s, so
checkpoints, weight tying and ``torch.nn.Linear``-aware code see no difference.

Measured at the word model's size, session 11 (AVX-512 EPYC, 2 threads): the three products 153 ms on
oneDNN against 190 ms on MKL per training step (forward 48 against 58, hidden gradient 50 against 55,
weight gradient 49 against 75).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from lmtrain.fast.autocast import autocast_dtype
from lmtrain.fast.onednn_linear import (
    linear_on_onednn,
    projection_on_onednn,
    weight_gradients,
    weight_gradients_on_onednn,
)
from lmtrain.fast.weight_gradient import input_gradient, weight_gradient

MIN_WIDTH = 256
"""Both sides of the weight at least this wide (the shapes measured): a character model's decoder (V = 65)
stays on ``nn.Linear``."""


class Linear(nn.Linear):
    """``nn.Linear`` whose products run on oneDNN where that was measured to pay (see the module)."""

    def forward(self, x: Tensor) -> Tensor:
        if not self._onednn_pays(x):
            return F.linear(x, self.weight, self.bias)
        flat = x.reshape(-1, self.in_features)  # [..., H] -> [N, H]
        return _OneDNNLinear.apply(flat, self.weight, self.bias).view(*x.shape[:-1], self.out_features)

    def _onednn_pays(self, x: Tensor) -> bool:
        if min(self.weight.shape) < MIN_WIDTH or autocast_dtype(x.device.type) is not None:
            return False
        return projection_on_onednn(x.reshape(-1, self.in_features), self.weight, self.bias)


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return linear_on_onednn(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_out = grad_out.contiguous()  # dz [N, V]
        needs_x, needs_weight, needs_bias = ctx.needs_input_grad
        grad_x = input_gradient(grad_out, weight) if needs_x else None
        grad_weight = grad_bias = None
        if needs_weight:
            if weight_gradients_on_onednn(grad_out, weight.shape[1]):
                (grad_weight,) = weight_gradients(grad_out, x)
            else:
                grad_weight = weight_gradient((x, grad_out))
        if needs_bias and ctx.has_bias:
            grad_bias = grad_out.sum(0)
        return grad_x, grad_weight, grad_bias
