"""The per-step product of a recurrent window on each of `StepProduct`'s backends, side by side.

    python scripts/bench_step_products.py    # the char bench's H = 128 ... 1024 (B = 64), the word model's
    python scripts/bench_step_products.py --threads 1

For each shape, forward (`a<t-1> W_aa^T`: `[B, H] x [H, 4H]`) and backward (`dz<t> W_aa`: `[B, 4H] x
[4H, H]`), the weight is laid out once, as a window does, and then multiplied by T = 64 different inputs
in a loop, as the steps of a window are; the loops of the backends alternate (the order reverses every
repetition), and the table shows each backend's median GFLOP/s over the repetitions. `panels` is
lmtrain's C kernel (`lmtrain/kernels/panel_product.c`), `onednn` torch's oneDNN linear on a blocked
weight, `addmm` MKL on a contiguous transposed weight; a backend that cannot run here is left out.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lmtrain.cells.step_product import StepProduct, onednn_available  # noqa: E402
from lmtrain.kernels.panel_product import panel_product_available  # noqa: E402

SHAPES = [(64, 128), (64, 256), (64, 512), (64, 1024), (20, 650)]  # (B, H)


def loop_seconds(product: StepProduct, inputs: torch.Tensor, out: torch.Tensor) -> float:
    started = time.perf_counter()
    for x in inputs:
        product(x, out=out)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    backends = [
        name
        for name, available in (
            ("panels", panel_product_available()),
            ("onednn", onednn_available()),
            ("addmm", True),
        )
        if available
    ]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.steps} products a loop, "
        f"{args.reps} interleaved repetitions, median GFLOP/s\n"
    )
    print("| B | H | product | " + " | ".join(backends) + " |")
    print("|---:|---:|---|" + "---:|" * len(backends))
    generator = torch.Generator().manual_seed(0)
    for batch, hidden in SHAPES:
        weight_aa = torch.randn(4 * hidden, hidden, generator=generator)
        for direction, weight in (
            ("forward [B, H] x [H, 4H]", weight_aa),
            ("backward [B, 4H] x [4H, H]", weight_aa.t()),
        ):
            inputs = torch.randn(args.steps, batch, weight.shape[1], generator=generator)
            out = torch.empty(batch, weight.shape[0])
            products = {name: StepProduct(weight, batch, args.steps, backend=name) for name in backends}
            seconds = {name: [] for name in backends}
            for rep in range(args.reps + 1):
                for name in backends if rep % 2 == 0 else backends[::-1]:
                    elapsed = loop_seconds(products[name], inputs, out)
                    if rep:  # the first repetition warms up
                        seconds[name].append(elapsed)
            flops = 2 * batch * weight.shape[0] * weight.shape[1] * args.steps
            rates = " | ".join(f"{flops / statistics.median(seconds[name]) / 1e9:.0f}" for name in backends)
            print(f"| {batch} | {hidden} | {direction} | {rates} |", flush=True)


if __name__ == "__main__":
    main()
