"""Generation speed of `lmtrain sample`, against the same model run on `nn.LSTM`: tokens per second.

    python scripts/bench_generate.py                      # 2-layer LSTM, H = 512, batch 1 and 32
    python scripts/bench_generate.py --vocab-sizes 10000 --batch-sizes 1 --steps 500
    python scripts/bench_generate.py --device cuda

Five generators of the same randomly initialised model (speed does not depend on the weights), each
drawing every token as `sampling.next_tokens` does, under `torch.inference_mode`:

- `generate`: `sampling.generate`, the code behind `lmtrain sample`: for up to `FEW_STREAMS`
  fp32 CPU streams the C kernels' loop on buffers made once (`fast.token_loop`: one call per layer, one
  for the decoder, one that samples), otherwise one `model.inference_step` per token (weights laid out
  once, no shape checks); the embedding folded into the first layer when the vocabulary is small.
- `generate, bf16 weights`: the same on a copy of the model with its weights rounded to bfloat16
  (`lmtrain sample --weights bf16`), which the generation kernels read in half the bytes.
- `inference_step`: a loop of `model.inference_step` per token and `sampling.next_tokens`, what
  `generate` runs where its C loop does not apply (more streams, CUDA, no C kernels).
- `model.step`: the same loop with the model's checked, general `step` (one token at a time with shape
  checks, the weights not laid out for generation).
- `nn.LSTM` (`nn.GRU`, `nn.RNN` for `--cell gru`, `rnn`): the same loop with the layers converted to one
  multi-layer torch module (`stack_to_native`), called with a window of one step per token, the way a
  generator built on torch's fused module runs.

Before each vocabulary's rows, a row gives the size of the weights a batch-1 step multiplies and how long
torch takes to read them once (`torch.sum` over each): a batch-1 step reads each of them once too, so this
is the scale of a step's time. It is a reference, not a ceiling: the C kernels read faster than `sum` (on
the development machine about 100 GB/s against 50-80).

`--no-stop` is implied, so every stream generates `--steps` tokens; tokens/s counts the tokens of all
streams of the batch. The three run interleaved (the order swaps every repetition) after one warm-up
run each; the table shows the median of `--repeats` repetitions and the median ratio.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import synchronize  # noqa: E402

from lmtrain.config import ModelConfig  # noqa: E402
from lmtrain.data.tokenizer import EOS, UNK, WordTokenizer  # noqa: E402
from lmtrain.generation.sampling import SamplingOptions, generate, next_tokens  # noqa: E402
from lmtrain.model.cells import stack_to_native  # noqa: E402
from lmtrain.model.language_model import RNNLanguageModel  # noqa: E402


@torch.inference_mode()
def loop(step: Callable, state, model: RNNLanguageModel, steps: int, batch_size: int, seed: int) -> None:
    """The loop of `sampling.generate_steps` with another `step(tokens, state) -> (logits, state)`."""
    device = model.decoder.weight.device
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    logits = torch.zeros(batch_size, model.vocab_size, device=device)
    for position in range(steps):
        tokens = next_tokens(logits, SamplingOptions(), None, generator)
        tokens.tolist()  # generate hands every token to Python
        if position + 1 < steps:
            logits, state = step(tokens, state)


def native_step(model: RNNLanguageModel) -> Callable:
    """A generator step on `nn.LSTM` (or `nn.RNN` / `nn.GRU`) with the model's weights; the state is
    torch's `(h, c)` with a leading `num_layers` dimension."""
    native = stack_to_native(model.layers).eval()

    def step(tokens: torch.Tensor, state):
        y, state = native(model.embedding(tokens).unsqueeze(0), state)  # one step: [1, B, H]
        return model.decoder(y[0]), state

    return step


def native_state(model: RNNLanguageModel, batch_size: int, device: torch.device):
    layers, hidden = len(model.layers), model.layers[0].hidden_size
    zeros = torch.zeros(layers, batch_size, hidden, device=device)
    return (zeros, zeros.clone()) if model.layers[0].num_states == 2 else zeros


def generators(
    model: RNNLanguageModel, tokenizer: WordTokenizer, steps: int, batch_size: int, device: torch.device
) -> dict[str, Callable[[], None]]:
    """The five generators of the module docstring, each a call that generates ``steps`` tokens."""
    native = native_step(model)
    rounded = copy.deepcopy(model)
    rounded.round_weights(torch.bfloat16)
    return {
        "generate": lambda: generate(model, tokenizer, steps, num_samples=batch_size, stop_at_eos=False),
        "bf16": lambda: generate(rounded, tokenizer, steps, num_samples=batch_size, stop_at_eos=False),
        "inference_step": lambda: loop(
            model.inference_step(), model.initial_state(batch_size), model, steps, batch_size, seed=0
        ),
        "model.step": lambda: loop(model.step, None, model, steps, batch_size, seed=0),
        "native": lambda: loop(native, native_state(model, batch_size, device), model, steps, batch_size, 0),
    }


def weights_read_per_token(model: RNNLanguageModel) -> list[torch.Tensor]:
    """The weight matrices one generation step multiplies: each layer's recurrent half, its input half
    (except the first layer's when the embedding is folded into it: a row lookup then), the decoder."""
    folded = model.folds_embedding()
    weights = [model.decoder.weight]
    for depth, layer in enumerate(model.layers):
        weights.append(layer.weight_aa)
        if not (folded and depth == 0):
            weights.append(layer.weight_ax)
    return [weight.detach() for weight in weights]


def read_ceiling(model: RNNLanguageModel, device: torch.device, repeats: int = 50) -> tuple[float, float]:
    """(bytes, seconds): the weights of one batch-1 step and the median time to read them all once with
    ``torch.sum``: the scale of the step's time, whose matrix-vector products read each weight once too."""
    weights = weights_read_per_token(model)
    times = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        for weight in weights:
            weight.sum()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return sum(w.numel() * w.element_size() for w in weights), statistics.median(times)


def timed(run: Callable[[], None], device: torch.device) -> float:
    synchronize(device)
    started = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", default="lstm", choices=["rnn", "gru", "lstm"])
    parser.add_argument("--hidden-size", type=int, default=512)
    parser.add_argument("--embedding-size", type=int, default=512)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--vocab-sizes", type=int, nargs="+", default=[100, 10_000])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--steps", type=int, default=200, help="tokens generated per stream")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gru_variant = {"gru_variant": "cudnn"} if args.cell == "gru" else {}  # the one nn.GRU computes
    config = ModelConfig(
        cell=args.cell,
        embedding_size=args.embedding_size,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        dropout=0.0,
        **gru_variant,
    )
    native = {"lstm": "nn.LSTM", "gru": "nn.GRU", "rnn": "nn.RNN"}[args.cell]

    torch.manual_seed(0)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(
        f"{args.num_layers}-layer {args.cell}, embedding {args.embedding_size}, hidden {args.hidden_size}, "
        f"{args.steps} tokens per stream, median of {args.repeats} interleaved repetitions; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {where}, {device}\n"
    )
    print(
        "| vocabulary | batch | `generate` tok/s | `generate`, bf16 weights, tok/s | `inference_step` tok/s "
        "| `model.step` tok/s "
        f"| `{native}` tok/s | generate / {native} (median, min-max) | ms per token (generate) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for vocab_size in args.vocab_sizes:
        tokenizer = WordTokenizer([UNK, EOS, *(f"w{i}" for i in range(vocab_size - 2))])
        model = RNNLanguageModel(vocab_size, config).to(device).eval()
        size, seconds_to_read = read_ceiling(model, device)
        print(
            f"| {vocab_size:,} | (reading the {size / 2**20:.1f} MiB of weights a batch-1 step multiplies, "
            f"once, with torch's `sum`: {1e3 * seconds_to_read:.2f} ms, "
            f"{size / seconds_to_read / 1e9:.0f} GB/s, {1 / seconds_to_read:,.0f} reads/s) | | | | | | | |"
        )
        for batch_size in args.batch_sizes:
            runs = generators(model, tokenizer, args.steps, batch_size, device)
            seconds = {name: [] for name in runs}
            for run in runs.values():
                run()  # warm up
            for repeat in range(args.repeats):
                order = list(runs) if repeat % 2 == 0 else list(runs)[::-1]
                for name in order:
                    seconds[name].append(timed(runs[name], device))
            tokens = batch_size * args.steps
            rate = {name: tokens / statistics.median(times) for name, times in seconds.items()}
            ratios = [
                native / ours for ours, native in zip(seconds["generate"], seconds["native"], strict=True)
            ]
            print(
                f"| {vocab_size:,} | {batch_size} | {rate['generate']:,.0f} | {rate['bf16']:,.0f} | "
                f"{rate['inference_step']:,.0f} | {rate['model.step']:,.0f} | "
                f"{rate['native']:,.0f} | {statistics.median(ratios):.1f}x "
                f"({min(ratios):.1f}-{max(ratios):.1f}) | "
                f"{1000 * statistics.median(seconds['generate']) / args.steps:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
