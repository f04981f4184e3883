"""lmtrain's fast layer: the same functions as the reference cells, computed faster on CPUs.

Nothing in the core imports this package; ``lmtrain.model.backends.fast_layer()`` loads it on first use
(unless ``LMTRAIN_FAST=off``) and calls ``register()``, which fills the backends' registries:

    lstm_window.py, gru_window.py   the ``fused`` windows: forward without autograd, a hand-written backward
                                    through time, every weight gradient one product after the loop
    step_product.py, weight_gradient.py
                                    the windows' matrix products in the form measured fastest for them
    generation.py, token_loop.py, panels.py
                                    generation: one C call per layer and token, buffers made once
    dropout.py                      a drop-in ``nn.Dropout`` with a faster CPU mask
    kernels/                        the C kernels (compiled on first use) and their ctypes faces

Every piece is tested against the reference (``tests/``), and ``docs/performance.md`` lists what each one
gains end to end, with the command that measured it.
"""

from __future__ import annotations


def register() -> None:
    """Fill ``lmtrain.model.backends``' registries with this layer's implementations."""
    from lmtrain.fast.dropout import Dropout
    from lmtrain.fast.generation import KERNEL_STEPS, draw_tokens, step_factory
    from lmtrain.fast.gru_window import cudnn_gru_window, gru_window
    from lmtrain.fast.lstm_window import lstm_window
    from lmtrain.fast.panels import generation_linear
    from lmtrain.fast.switches import piece_off
    from lmtrain.fast.token_loop import TokenLoop
    from lmtrain.model import backends
    from lmtrain.model.cells import CudnnGRULayer, GRULayer, LSTMLayer

    def run_lstm(layer, x, state):
        a_prev, c_prev = state
        y, c = lstm_window(x, layer.weight_ax, layer.bias, layer.weight_aa, a_prev, c_prev)
        return y, (y[-1], c)

    def run_gru(layer, x, state):
        y = gru_window(x, layer.weight_ax, layer.bias, layer.weight_aa, state[0])
        return y, (y[-1],)

    def run_cudnn_gru(layer, x, state):
        y = cudnn_gru_window(
            x, layer.weight_ax, layer.bias, layer.weight_aa, layer.recurrent_candidate_bias, state[0]
        )
        return y, (y[-1],)

    backends.FUSED_WINDOWS.update({LSTMLayer: run_lstm, GRULayer: run_gru, CudnnGRULayer: run_cudnn_gru})
    backends.GENERATION_STEPS.update(dict.fromkeys(KERNEL_STEPS, step_factory))
    backends.FAST_OPERATIONS.update(
        {
            "generation_linear": generation_linear,
            "generation_loop": TokenLoop.for_model,
            "draw_tokens": draw_tokens,
        }
    )
    if not piece_off("dropout"):
        backends.FAST_OPERATIONS["dropout"] = Dropout
