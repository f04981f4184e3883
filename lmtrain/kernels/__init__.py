"""Fused CPU kernels for the cells' element-wise step arithmetic, written in C and compiled on first use.

The matrix products of a recurrent step already run on torch's best kernels; what eager PyTorch cannot
fuse is the gate arithmetic around them, a handful of calls per step that each make a pass over memory.
These kernels do that arithmetic in one pass. They are optional: where no C compiler is found, or
``LMTRAIN_KERNELS=torch`` is set, the cells run the same equations in torch (see ``kernel_mode``).

    compiler.py     builds a C file into a shared library once per machine (cached) and loads it
    lstm_step.c     the LSTM step's gate arithmetic, forward and backward
    lstm.py         the Python face of lstm_step.c: which tensors it takes, and when it applies
"""
