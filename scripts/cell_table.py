"""Print the table of cells in docs/cells.md: their equations and parameter counts, counted from the code.

    python scripts/cell_table.py

Counts are for one layer with input size 128 (the embedding) and hidden size 256, built by
`lmtrain.model.cells.build_layer`; the torch column counts the `torch.nn` module that `to_native()` returns.
`tests/test_cell_table.py` checks that docs/cells.md holds exactly this output.
"""

from __future__ import annotations

from lmtrain.config import ModelConfig
from lmtrain.model.cells import build_layer

INPUT_SIZE, HIDDEN_SIZE = 128, 256

CELLS = [
    (
        "`rnn` (`nonlinearity: tanh` or `relu`)",
        {"cell": "rnn"},
        "`a<t> = g(W_a [a<t-1>, x<t>] + b_a)`, g = tanh or relu",
    ),
    (
        "`gru` (`gru_variant: notes`)",
        {"cell": "gru"},
        "`Γ_u = σ(W_u [c<t-1>, x<t>] + b_u)`, `Γ_r = σ(W_r [c<t-1>, x<t>] + b_r)`, "
        "`c̃<t> = tanh(W_c [Γ_r * c<t-1>, x<t>] + b_c)`, `c<t> = Γ_u * c̃<t> + (1 - Γ_u) * c<t-1>`, "
        "`a<t> = c<t>`",
    ),
    (
        "`gru` (`gru_variant: cudnn`)",
        {"cell": "gru", "gru_variant": "cudnn"},
        "as `notes` but `c̃<t> = tanh(W_cx x<t> + b_c + Γ_r * (W_ca c<t-1> + b_ca))`: the reset gate "
        "scales the recurrent product (one extra bias `b_ca`)",
    ),
    (
        "`lstm`",
        {"cell": "lstm"},
        "`C̃<t> = tanh(W_C [a<t-1>, x<t>] + b_C)`, `Γ_u`, `Γ_f`, `Γ_o = σ(W_· [a<t-1>, x<t>] + b_·)`, "
        "`C<t> = Γ_u * C̃<t> + Γ_f * C<t-1>`, `a<t> = Γ_o * tanh(C<t>)`",
    ),
    (
        "`esn` (`spectral_radius`)",
        {"cell": "esn"},
        "`a<t> = g(W_aa a<t-1> + W_ax x<t> + b_a)` with `W_aa` a fixed random reservoir of the given "
        "spectral radius",
    ),
]


def count(tensors) -> int:
    return sum(tensor.numel() for tensor in tensors)


def cell_table() -> str:
    lines = [
        "| cell | equations (notes' notation) | trained parameters | fixed | `torch.nn` counterpart |",
        "|---|---|---:|---:|---|",
    ]
    for name, options, equations in CELLS:
        layer = build_layer(ModelConfig(**options, hidden_size=HIDDEN_SIZE), INPUT_SIZE)
        trained, fixed = count(layer.parameters()), count(layer.buffers())
        if layer.native_type is None:
            native = "none"
        else:
            module = layer.to_native()
            native = f"`nn.{type(module).__name__}`, {count(module.parameters()):,} (two bias vectors)"
        lines.append(f"| {name} | {equations} | {trained:,} | {fixed:,} | {native} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(cell_table())
