"""The per-step product of a recurrent window on each of `StepProduct`'s backends, side by side.

    python scripts/bench_step_products.py    # the char bench's H = 128 ... 1024 (B = 64), the word model's
    python scripts/bench_step_products.py --threads 1
    python scripts/bench_step_products.py --shapes 20:650,32:1024 --steps 35 --with-layout

For each shape, forward (`a<t-1> W_aa^T`: `[B, H] x [H, 4H]`) and backward (`dz<t> W_aa`: `[B, 4H] x
[4H, H]`), the weight is laid out once, as a window does, and then multiplied by T = 64 different inputs
in a loop, as the steps of a window are; the loops of the backends alternate (the order reverses every
repetition), and the table shows each backend's median GFLOP/s over the repetitions. `panels` is
lmtrain's C kernel (`lmtrain/fast/kernels/panel_product.c`), `addmm` torch's product on a contiguous
transposed weight; a backend that cannot run here is left out.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lmtrain.fast.kernels.panel_product import panel_product_available  # noqa: E402
from lmtrain.fast.step_product import StepProduct  # noqa: E402

SHAPES = [(64, 128), (64, 256), (64, 512), (64, 1024), (20, 650)]  # (B, H)
SHAPES_HELP = ",".join(f"{batch}:{hidden}" for batch, hidden in SHAPES)


def parse_shapes(text: str | None) -> list[tuple[int, int]]:
    if text is None:
        return SHAPES
    return [(int(batch), int(hidden)) for batch, hidden in (pair.split(":") for pair in text.split(","))]


def loop_seconds(make_product, inputs: torch.Tensor, out: torch.Tensor) -> float:
    """Seconds for one window's loop of products; ``make_product()`` lays the weight out (timed too when
    it does so here, not before)."""
    started = time.perf_counter()
    product = make_product()
    for x in inputs:
        product(x, out=out)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--shapes", default=None, help="B:H pairs to measure, comma-separated (default: " + SHAPES_HELP + ")"
    )
    parser.add_argument(
        "--with-layout", action="store_true", help="time laying the weight out in each loop, as a window does"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    backends = [
        name
        for name, available in (
            ("panels", panel_product_available()),
            ("addmm", True),
        )
        if available
    ]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.steps} products a loop, "
        f"{args.reps} interleaved repetitions, median GFLOP/s"
        + (", the weight's layout included\n" if args.with_layout else "\n")
    )
    print("| B | H | product | " + " | ".join(backends) + " |")
    print("|---:|---:|---|" + "---:|" * len(backends))
    generator = torch.Generator().manual_seed(0)
    for batch, hidden in parse_shapes(args.shapes):
        weight_aa = torch.randn(4 * hidden, hidden, generator=generator)
        for direction, weight in (
            ("forward [B, H] x [H, 4H]", weight_aa),
            ("backward [B, 4H] x [4H, H]", weight_aa.t()),
        ):
            inputs = torch.randn(args.steps, batch, weight.shape[1], generator=generator)
            out = torch.empty(batch, weight.shape[0])
            makers = {
                name: functools.partial(StepProduct, weight, batch, args.steps, backend=name)
                for name in backends
            }
            if not args.with_layout:  # laid out once here, outside the timed loops
                makers = {
                    name: functools.partial(lambda product: product, make()) for name, make in makers.items()
                }
            seconds = {name: [] for name in backends}
            for rep in range(args.reps + 1):
                for name in backends if rep % 2 == 0 else backends[::-1]:
                    elapsed = loop_seconds(makers[name], inputs, out)
                    if rep:  # the first repetition warms up
                        seconds[name].append(elapsed)
            flops = 2 * batch * weight.shape[0] * weight.shape[1] * args.steps
            rates = " | ".join(f"{flops / statistics.median(seconds[name]) / 1e9:.0f}" for name in backends)
            print(f"| {batch} | {hidden} | {direction} | {rates} |", flush=True)


if __name__ == "__main__":
    main()
