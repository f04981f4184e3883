"""Fused CPU kernels for the cells' steps, written in C and compiled on first use.

What eager PyTorch cannot fuse is the gate arithmetic around a recurrent step's matrix product, a handful
of calls per step that each make a pass over memory; these kernels do that arithmetic in one pass. The
step's thin product itself (a few rows times a fixed weight) also runs here where it beats torch's
general kernels (``panel_product.c``); the large products stay in torch.
The kernels are optional: where no C compiler is found, or ``LMTRAIN_KERNELS=torch`` is set, the cells
run the same equations in torch (see ``kernel_mode``).

    compiler.py     builds the C files into one shared library once per machine (cached) and loads it
    fastmath.h      the activations (σ, tanh) from one vectorizable exponential
    float8.h        eight floats as one vector, for the kernels' hand-vectorized inner loops
    lstm_step.c     the LSTM step's gate arithmetic, forward and backward   (lstm.py: its Python face)
    gru_step.c      the notes' GRU step, two passes each way   (gru.py)
    panel_product.c the windows' per-step matrix products on a weight packed once   (panel_product.py)
    generate.c      LSTM, GRU and RNN generation steps for a few streams on weights packed once (fp32
                    or bf16), linear layers, the sampling draw and the whole sampler (temperature,
                    softmax, draw)   (generate.py; lmtrain/token_loop.py runs them on buffers made once)
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

SIZE, ADDRESS = ctypes.c_int64, ctypes.c_void_p
"""The C types of the kernels' arguments: sizes are ``int64_t``, tensors are passed by address."""


def fused_applies(*tensors: Tensor) -> bool:
    """Whether the C kernels can take these tensors: all fp32 on the CPU."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)


def pointer(tensor: Tensor | None) -> int | None:
    """The address of a contiguous tensor's data for a C kernel (None for None: C's NULL)."""
    if tensor is None:
        return None
    if not tensor.is_contiguous():
        raise ValueError("the C kernels need contiguous tensors")
    return tensor.data_ptr()


def c_function(library: ctypes.CDLL, name: str, argument_types: list, result=None):
    """The library's C function ``name``, told its argument and result types (so that ctypes converts the
    Python values it is called with, and checks their number)."""
    function = getattr(library, name)
    function.argtypes = argument_types
    function.restype = result
    return function
