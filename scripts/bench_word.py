"""Word-level training speed and peak training memory: our LSTM language model against the same model on
`nn.LSTM`.

    python scripts/bench_word.py                 # both parts on the CPU
    python scripts/bench_word.py --part speed    # or --part memory
    python scripts/bench_word.py --device cuda

The two models are built alike, `embedding -> dropout -> 2 LSTM layers (dropout between) -> dropout ->
decoder -> cross-entropy`: ours is `lmtrain.model.RNNLanguageModel` (our `LSTMLayer`s), the reference
the same embedding and decoder around one 2-layer `nn.LSTM` with the same weights (`stack_to_native`).

speed: one full training step, the trainer's (forward, loss, backward, gradient clipping at 5, SGD
update), of the Penn Treebank "medium" model of Zaremba et al. (2014): V = 10,000, E = H = 650, dropout
0.5, B = 20, T = 35 (`configs/ptb-medium.yaml`). The two run in one process, interleaved (the order swaps
every repetition); the table shows median tokens/s and the median of the per-repetition ratios. A
second row times the LSTM stack alone (embedding dropout, the 2 layers with dropout between; forward and
backward from a fixed gradient), so that the whole step's ratio can be read apart from what the models'
other parts contribute: both use the same embedding and decoder modules, but ours applies lmtrain's
dropout (`lmtrain.fast.dropout`, a faster mask on the CPU) where the reference applies torch's. A third row
times the whole step against the model as PyTorch's own word-language example builds it.

memory: the peak memory of one such training step at H = 1024, 2 layers, B = 64, T = 100, V = 10,000.
Each model is measured in a fresh Python process (so one cannot reuse the other's freed memory). On
CUDA, `torch.cuda.max_memory_allocated` after the step, minus the memory allocated before it (weights,
gradients of a previous step: none, inputs). On the CPU, which has no allocator statistics, the growth
of the process's peak resident set (`ru_maxrss`) during the step over its resident set before it: what
the operating system had to provide, including memory the C library keeps after a free.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import calibrated, interleaved, matmul_peak, synchronize  # noqa: E402

from lmtrain.config import ModelConfig  # noqa: E402
from lmtrain.model.cells import stack_to_native  # noqa: E402
from lmtrain.model.language_model import RNNLanguageModel  # noqa: E402


class NativeLanguageModel(nn.Module):
    """``RNNLanguageModel``'s structure with one multi-layer ``nn.LSTM`` for the stack of layers; with
    ``plain``, also a plain ``nn.Linear`` decoder (the same parameters), as PyTorch's own example has it."""

    def __init__(self, ours: RNNLanguageModel, dropout: float, plain: bool = False) -> None:
        super().__init__()
        self.embedding = ours.embedding
        self.lstm = stack_to_native(ours.layers)
        self.lstm.dropout = dropout  # torch's dropout between layers, as ours applies it
        self.dropout = nn.Dropout(dropout)
        self.decoder = ours.decoder
        if plain:
            self.decoder = nn.Linear(ours.decoder.in_features, ours.decoder.out_features)
            self.decoder.weight, self.decoder.bias = ours.decoder.weight, ours.decoder.bias

    def language_model_loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(self.dropout(self.embedding(inputs)))  # [T, B, H]
        logits = self.decoder(self.dropout(y))
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def make_model(kind: str, hidden: int, vocab: int, dropout: float, device: torch.device) -> nn.Module:
    """``ours`` (``RNNLanguageModel``), ``torch`` (the reference, ``NativeLanguageModel``) or ``plain``
    (the reference with ``nn.Linear`` as its decoder), same weights for a seed."""
    torch.manual_seed(0)
    config = ModelConfig(
        cell="lstm", embedding_size=hidden, hidden_size=hidden, num_layers=2, dropout=dropout
    )
    ours = RNNLanguageModel(vocab, config).to(device)
    return ours if kind == "ours" else NativeLanguageModel(ours, dropout, plain=kind == "plain").to(device)


def loss_of(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if isinstance(model, RNNLanguageModel):
        return model.language_model_loss(inputs, targets)[0]
    return model.language_model_loss(inputs, targets)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, inputs, targets) -> None:
    """What ``lmtrain.training.trainer`` does per window: loss, backward, clip to norm 5, SGD update."""
    optimizer.zero_grad(set_to_none=True)
    loss_of(model, inputs, targets).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    optimizer.step()


def batch(vocab: int, steps: int, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(vocab, (steps + 1, batch_size), generator=generator).to(device)
    return tokens[:-1], tokens[1:]


def stack_pass(model: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> None:
    """Forward and backward through the recurrent stack alone: dropout, 2 LSTM layers with dropout between
    (``x`` and ``grad`` are ``[T, B, H]``: stand-ins for the embeddings and the decoder's gradient)."""
    model.zero_grad(set_to_none=True)
    if isinstance(model, RNNLanguageModel):
        y = model.dropout(x)
        for depth, layer in enumerate(model.layers):
            y, _ = layer(model.dropout(y) if depth > 0 else y)
    else:
        y, _ = model.lstm(model.dropout(x))
    y.backward(grad)


def speed(args: argparse.Namespace, device: torch.device) -> None:
    vocab, hidden, steps, batch_size = 10_000, args.hidden, args.bptt, args.batch
    inputs, targets = batch(vocab, steps, batch_size, device)
    generator = torch.Generator().manual_seed(2)
    embedded = torch.randn(steps, batch_size, hidden, generator=generator).to(device).requires_grad_()
    upstream = torch.randn(steps, batch_size, hidden, generator=generator).to(device)
    whole, stack = {}, {}
    for kind in ("ours", "torch", "plain"):
        model = make_model(kind, hidden, vocab, 0.5, device).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        step = lambda model=model, optimizer=optimizer: train_step(model, optimizer, inputs, targets)  # noqa: E731
        whole[kind] = calibrated(step, args.seconds, device)
        if kind != "plain":  # the plain model's stack is the reference's
            stack[kind] = calibrated(
                lambda model=model: stack_pass(model, embedded, upstream), args.seconds, device
            )
    # Matrix-product FLOPs per token: 2 layers of 4 gates over [H + H], the decoder; x 3 for training.
    stack_flops = 3 * 2 * 2 * 4 * hidden * 2 * hidden
    flops = stack_flops + 3 * 2 * hidden * vocab
    peak = matmul_peak(device, 2048, 5)
    print(
        f"word-level step: V={vocab:,}, 2 layers, E=H={hidden}, dropout 0.5, B={batch_size}, T={steps}; "
        f"{args.reps} interleaved repetitions, medians; matmul peak {peak / 1e9:.0f} GFLOP/s\n"
    )
    print("| what | ours tok/s | reference tok/s | ours / reference (median, min-max) | ours % peak |")
    print("|---|---:|---:|---:|---:|")
    rows = (
        ("whole step: forward, backward, clip, SGD", whole, flops),
        ("the LSTM stack alone: forward + backward", stack, stack_flops),
        (
            "whole step against plain PyTorch (`nn.Linear` decoder)",
            {"ours": whole["ours"], "torch": whole["plain"]},
            flops,
        ),
    )
    for label, calls, row_flops in rows:
        rates, ratios = interleaved(calls, args.reps, device, steps * batch_size)
        ours, theirs = statistics.median(rates["ours"]), statistics.median(rates["torch"])
        print(
            f"| {label} | {ours:,.0f} | {theirs:,.0f} | {statistics.median(ratios):.2f}x "
            f"({min(ratios):.2f}-{max(ratios):.2f}) | {100 * ours * row_flops / peak:.0f}% |",
            flush=True,
        )
    print()


def measure_memory(kind: str, args: argparse.Namespace) -> int:
    """Bytes the training step needed beyond what was allocated before it (run in a fresh process)."""
    device = torch.device(args.device)
    vocab = 10_000
    model = make_model(kind, args.memory_hidden, vocab, 0.0, device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    inputs, targets = batch(vocab, args.memory_bptt, args.memory_batch, device)
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        train_step(model, optimizer, inputs, targets)
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with open("/proc/self/statm") as statm:
        before = int(statm.read().split()[1]) * resource.getpagesize()  # resident set now
    train_step(model, optimizer, inputs, targets)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before  # ru_maxrss is in KiB


def memory(args: argparse.Namespace) -> None:
    measured = {}
    for kind in ("ours", "torch"):
        command = [sys.executable, __file__, "--measure-memory", kind, "--device", args.device]
        command += ["--memory-hidden", str(args.memory_hidden), "--memory-batch", str(args.memory_batch)]
        command += ["--memory-bptt", str(args.memory_bptt)]
        if args.threads:
            command += ["--threads", str(args.threads)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        measured[kind] = json.loads(output.strip().splitlines()[-1])["bytes"]
    how = "torch.cuda.max_memory_allocated" if args.device.startswith("cuda") else "growth of ru_maxrss"
    print(
        f"peak training memory of one step: V=10,000, 2 layers, E=H={args.memory_hidden}, "
        f"B={args.memory_batch}, T={args.memory_bptt}; {how}, one fresh process per model\n"
    )
    print("| model | ours MiB | nn.LSTM MiB | ours / nn.LSTM |\n|---|---:|---:|---:|")
    print(
        f"| word LSTM 2 x {args.memory_hidden} | {measured['ours'] / 2**20:,.0f} | "
        f"{measured['torch'] / 2**20:,.0f} | {measured['ours'] / measured['torch']:.2f}x |",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--part", default="both", choices=["speed", "memory", "both"])
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions of the speed part")
    parser.add_argument("--seconds", type=float, default=1.0, help="target seconds per timing")
    parser.add_argument("--hidden", type=int, default=650)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--bptt", type=int, default=35)
    parser.add_argument("--memory-hidden", type=int, default=1024)
    parser.add_argument("--memory-batch", type=int, default=64)
    parser.add_argument("--memory-bptt", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--measure-memory", choices=["ours", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.measure_memory:
        print(json.dumps({"bytes": measure_memory(args.measure_memory, args)}))
        return
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(f"torch {torch.__version__}, {where}\n")
    if args.part in ("speed", "both"):
        speed(args, device)
    if args.part in ("memory", "both"):
        memory(args)


if __name__ == "__main__":
    main()
