"""Training speed of our recurrent layers against PyTorch's fused modules, measured side by side.

    python scripts/bench.py                 # LSTM and GRU, H = 128, 256, 512, 1024, on the CPU
    python scripts/bench.py --quick         # a smoke run: small sizes, few repetitions
    python scripts/bench.py --device cuda   # our cells against cuDNN

The setup is the issue's char model: V = 65 tokens, one layer, B = 64 sequences, T = 64 steps,
``embedding (V -> H) -> layer -> decoder (H -> V) -> cross-entropy``. One training step is the forward
and backward pass of that model (no optimizer update, which is the same for both). Ours is
``lmtrain.model.cells.LSTMLayer`` / ``GRULayer`` (the notes' formulation); the reference is ``nn.LSTM`` (with
the same weights, via ``to_native``) / ``nn.GRU`` (reset gate after the product: a different function of
the same size, the fused module a user would otherwise pick).

Noise: the machine may be shared, so the two are timed in one process, interleaved (ours, torch, ours,
torch, ... with the order swapped every repetition), and each repetition gives one ratio; the table
shows the median tokens/s of each and the median of the per-repetition ratios.

% of matmul peak: the script measures the fp32 peak itself with a large square GEMM. A training step
costs about 3 x the forward pass's matrix-product FLOPs (forward, plus the two products of the backward
pass, one for the input gradient and one for the weight gradient), so per token

    flops = 3 * (2 * G * H * (E + H) + 2 * H * V)

with G gate blocks (4 for the LSTM, 3 for the GRU), E = H the embedding width and V the vocabulary; the
elementwise gate work is not counted. % of peak = tokens/s * flops / peak.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lmtrain.fast.onednn_linear import laid_out_for_onednn, linear_on_onednn, onednn_available  # noqa: E402
from lmtrain.model.cells import GRULayer, LSTMLayer  # noqa: E402


class CharModel(nn.Module):
    """``embedding -> recurrent -> decoder``; ``recurrent`` is ours or a torch module (time-major)."""

    def __init__(self, vocab_size: int, recurrent: nn.Module, hidden_size: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        self.recurrent = recurrent
        self.decoder = nn.Linear(hidden_size, vocab_size)

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        y, _ = self.recurrent(self.embedding(inputs))  # both kinds return (y [T, B, H], state)
        return F.cross_entropy(self.decoder(y).flatten(0, 1), targets.flatten())


def make_pair(cell: str, hidden: int, vocab: int, device: torch.device) -> tuple[CharModel, CharModel]:
    """(ours, torch's) char models of the same size; the LSTM pair shares weights exactly."""
    if cell == "lstm":
        ours = LSTMLayer(hidden, hidden, device=device)
        reference = ours.to_native()
    else:
        ours = GRULayer(hidden, hidden, device=device)
        reference = nn.GRU(hidden, hidden, device=device)
    pair = CharModel(vocab, ours, hidden).to(device), CharModel(vocab, reference, hidden).to(device)
    pair[1].load_state_dict(
        {k: v for k, v in pair[0].state_dict().items() if "recurrent" not in k}, strict=False
    )
    return pair


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(model: CharModel, inputs: torch.Tensor, targets: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    model.loss(inputs, targets).backward()


def time_steps(step: Callable[[], None], steps: int, device: torch.device) -> float:
    """Seconds per call of ``step``, over ``steps`` calls."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def matmul_peak(device: torch.device, size: int, repeats: int) -> float:
    """The fp32 matrix-product rate in FLOP/s: the best of ``repeats`` products of two [size, size], on
    torch's ``mm`` and, on a CPU with oneDNN, on oneDNN with the weight laid out once (the faster of the
    two on AVX-512 AMD CPUs, where MKL's rate alone put both LSTMs above 100% of it)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    products = [lambda: torch.mm(a, b)]
    if device.type == "cpu" and onednn_available():
        laid_out = laid_out_for_onednn(b.t(), size)
        products.append(lambda: linear_on_onednn(a, laid_out))
    best = math.inf
    for product in products:
        product()  # warm up
        best = min(best, *(time_steps(product, 1, device) for _ in range(repeats)))
    return 2 * size**3 / best


def flops_per_token(cell: str, hidden: int, vocab: int) -> float:
    """Matrix-product FLOPs of one training step per token (see the module docstring)."""
    gates = 4 if cell == "lstm" else 3
    return 3 * (2 * gates * hidden * (hidden + hidden) + 2 * hidden * vocab)


def calibrated(
    step: Callable[[], None], seconds: float, device: torch.device
) -> tuple[Callable[[], None], int]:
    """``step``, warmed up (allocator, oneDNN primitive caches, cuDNN plans), and how many calls of it take
    about ``seconds``."""
    step()
    return step, max(1, round(seconds / time_steps(step, 1, device)))


def interleaved(
    steps: dict[str, tuple[Callable[[], None], int]], reps: int, device: torch.device, tokens: int
) -> tuple[dict[str, list[float]], list[float]]:
    """Tokens/s of ``steps["ours"]`` and ``steps["torch"]`` (each ``(step, calls per timing)``, ``tokens``
    per call) over ``reps`` repetitions, the order swapped every repetition, and the per-repetition
    ratios ours / torch."""
    rates = {"ours": [], "torch": []}
    ratios = []
    for rep in range(reps):
        for name in ("ours", "torch") if rep % 2 == 0 else ("torch", "ours"):
            step, count = steps[name]
            rates[name].append(tokens / time_steps(step, count, device))
        ratios.append(rates["ours"][-1] / rates["torch"][-1])
    return rates, ratios


def bench_pair(cell: str, hidden: int, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Median tokens/s of ours and torch's, and the median of their per-repetition ratios."""
    torch.manual_seed(0)
    ours, reference = make_pair(cell, hidden, args.vocab, device)
    inputs = torch.randint(args.vocab, (args.bptt, args.batch), device=device)
    targets = torch.randint(args.vocab, (args.bptt, args.batch), device=device)
    steps = {
        name: calibrated(lambda model=model: train_step(model, inputs, targets), args.seconds, device)
        for name, model in (("ours", ours), ("torch", reference))
    }
    rates, ratios = interleaved(steps, args.reps, device, args.bptt * args.batch)
    return {
        "ours": statistics.median(rates["ours"]),
        "torch": statistics.median(rates["torch"]),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="smoke run: H = 128, 256, 3 repetitions")
    parser.add_argument("--cells", default="lstm,gru", help="comma-separated: lstm, gru")
    parser.add_argument(
        "--sizes", default=None, help="comma-separated hidden sizes (default 128,256,512,1024)"
    )
    parser.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 7)")
    parser.add_argument("--seconds", type=float, default=None, help="target seconds per timing (default 0.4)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--bptt", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=65)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    sizes = args.sizes or ("128,256" if args.quick else "128,256,512,1024")
    args.sizes = [int(size) for size in sizes.split(",")]
    args.reps = args.reps or (3 if args.quick else 7)
    args.seconds = args.seconds or (0.1 if args.quick else 0.4)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)

    peak = matmul_peak(device, 2048, 4 if args.quick else 10)
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(f"torch {torch.__version__}, {where}; fp32 matmul peak {peak / 1e9:.0f} GFLOP/s")
    print(
        f"char model V={args.vocab}, 1 layer, B={args.batch}, T={args.bptt}, E=H; forward+backward; "
        f"{args.reps} interleaved repetitions, medians\n"
    )
    print(
        "| cell | H | ours tok/s | torch tok/s | ours / torch (median, min-max) "
        "| ours % peak | torch % peak |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for cell in args.cells.split(","):
        reference = "nn.LSTM" if cell == "lstm" else "nn.GRU"
        label = "LSTMLayer" if cell == "lstm" else "GRULayer (notes)"
        for hidden in args.sizes:
            result = bench_pair(cell, hidden, args, device)
            flops = flops_per_token(cell, hidden, args.vocab)
            print(
                f"| {label} vs {reference} | {hidden} | {result['ours']:,.0f} | {result['torch']:,.0f} | "
                f"{result['ratio']:.2f}x ({result['ratio_min']:.2f}-{result['ratio_max']:.2f}) | "
                f"{100 * result['ours'] * flops / peak:.0f}% | {100 * result['torch'] * flops / peak:.0f}% |",
                flush=True,
            )
    # On a shared machine the peak moves with the load; a second measurement shows by how much.
    again = matmul_peak(device, 2048, 4 if args.quick else 10)
    print(f"\nfp32 matmul peak measured again after the runs: {again / 1e9:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
