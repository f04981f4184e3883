"""Generation speed of `lmtrain sample`: tokens per second on this machine.

    python scripts/bench_generate.py                      # 2-layer LSTM, H = 512, batch 1 and 32
    python scripts/bench_generate.py --vocab-sizes 10000 --batch-sizes 1 --steps 500

Times `lmtrain.sampling.generate` (the code behind `lmtrain sample`): one `model.step` per token
with the carried state, under `torch.inference_mode`, drawing with `sampling.draw`. The model
is randomly initialised, since speed does not depend on the weights; `--no-stop` is implied, so
every stream generates `--steps` tokens. tokens/s counts the tokens of all streams of the batch.
Each number is the best of `--repeats` runs after one warm-up run (the best, because other
processes on a shared machine only ever slow a run down).
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from lmtrain.model import RNNLanguageModel
from lmtrain.sampling import SamplingOptions, generate
from lmtrain.tokenizer import EOS, UNK, WordTokenizer


def seconds_to_generate(
    model: RNNLanguageModel, tokenizer: WordTokenizer, steps: int, batch_size: int, repeats: int
) -> float:
    times = []
    for repeat in range(repeats + 1):
        started = time.perf_counter()
        samples = generate(
            model, tokenizer, steps, SamplingOptions(), num_samples=batch_size, seed=repeat, stop_at_eos=False
        )
        elapsed = time.perf_counter() - started
        assert all(len(sample) == steps for sample in samples)
        if repeat > 0:  # the first run warms up the allocator and the kernels
            times.append(elapsed)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", default="lstm", choices=["rnn", "gru", "lstm"])
    parser.add_argument("--hidden-size", type=int, default=512)
    parser.add_argument("--embedding-size", type=int, default=512)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--vocab-sizes", type=int, nargs="+", default=[100, 10_000])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--steps", type=int, default=100, help="tokens generated per stream")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    print(
        f"{args.num_layers}-layer {args.cell}, embedding {args.embedding_size}, hidden {args.hidden_size}, "
        f"{args.steps} tokens per stream, best of {args.repeats}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, {args.device}"
    )
    print("| vocabulary | batch | tokens/s | ms per step |\n|---:|---:|---:|---:|")
    for vocab_size in args.vocab_sizes:
        tokenizer = WordTokenizer([UNK, EOS, *(f"w{i}" for i in range(vocab_size - 2))])
        model = RNNLanguageModel(
            vocab_size, args.cell, args.embedding_size, args.hidden_size, args.num_layers, dropout=0.0
        )
        model = model.to(args.device).eval()
        for batch_size in args.batch_sizes:
            seconds = seconds_to_generate(model, tokenizer, args.steps, batch_size, args.repeats)
            print(
                f"| {vocab_size:,} | {batch_size} | {batch_size * args.steps / seconds:,.0f} | "
                f"{1000 * seconds / args.steps:.2f} |"
            )


if __name__ == "__main__":
    main()
