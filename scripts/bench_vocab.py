"""A word model with a large vocabulary, end to end: `lmtrain train` against PyTorch's word_language_model.

    python scripts/bench_vocab.py --example ~/src/pytorch-examples/word_language_model
    python scripts/bench_vocab.py --vocab 33278 --steps 150 --rounds 2 --example DIR

Both train the same model on the same generated corpus: a 2-layer LSTM, 200 wide (embedding 200),
dropout 0.2, SGD at lr 20 with gradient clipping at 0.25, BPTT 35, batch 20, and a softmax over every word of
the vocabulary (WikiText-2's 33,278 by default). The corpus is Zipf-distributed words from that
vocabulary, each of which appears in the training text. PyTorch's example (its `main.py`, from a checkout of
github.com/pytorch/examples that `--example` names; nothing of it is copied here) reads the folder's
train/valid/test.txt and prints its milliseconds per batch every `--log-interval` batches; lmtrain's
speed is the median of its `train/tokens_per_second` (`scripts/bench_train.py`). The two alternate run by
run and the table shows each one's median tokens/s over the rounds and the ratio. Without `--example`
only lmtrain is timed.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from bench_train import tokens_per_second  # noqa: E402

BATCH, BPTT = 20, 35


def write_corpus(folder: Path, vocab: int, train_tokens: int, seed: int = 0) -> None:
    """train/valid/test.txt of Zipf-distributed words ``w0 .. w{vocab-1}``, 20 words a line; the training
    text lists every word once first, so that the vocabulary is complete."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, vocab + 1)
    weights = 1.0 / ranks
    weights /= weights.sum()
    for name, size in (("train", train_tokens), ("valid", train_tokens // 10), ("test", train_tokens // 10)):
        ids = rng.choice(vocab, size=size, p=weights)
        if name == "train":
            ids = np.concatenate([np.arange(vocab), ids])
        words = [f"w{i}" for i in ids]
        lines = (" ".join(words[start : start + 20]) for start in range(0, len(words), 20))
        (folder / f"{name}.txt").write_text("\n".join(lines) + "\n")


def lmtrain_speed(corpus: Path, steps: int, scratch: Path) -> float:
    """Tokens/s of `lmtrain train` on the corpus with the example's model and recipe."""
    run_dir = scratch / "lmtrain-run"
    overrides = [
        f"run_dir={run_dir}", "data.dataset=null", f"data.train={corpus / 'train.txt'}",
        f"data.valid={corpus / 'valid.txt'}",
        "data.tokenizer=word", "model.cell=lstm", "model.embedding_size=200", "model.hidden_size=200",
        "model.num_layers=2", "model.dropout=0.2", "train.optimizer=sgd", "train.lr=20",
        "train.clip.max_norm=0.25", f"train.bptt={BPTT}", f"train.batch_size={BATCH}",
        f"train.max_steps={steps}", "train.eval_interval=1000000000", "train.eval_batch_size=10",
        "log.sample_length=0", "log.quiet=true", "log.log_interval=10",
    ]  # fmt: skip
    config = ROOT / "configs" / "quickstart.yaml"  # every field it sets is overridden or irrelevant here
    command = [sys.executable, "-m", "lmtrain", "train", str(config), *overrides, "--overwrite"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"lmtrain failed:\n{done.stderr[-2000:]}")
    return tokens_per_second(run_dir)


def example_speed(example: Path, corpus: Path, steps: int, scratch: Path) -> float:
    """Tokens/s of PyTorch's word_language_model `main.py` (one epoch cut to about ``steps`` batches by the
    corpus size): the median of its logged ms/batch after the first report."""
    command = [
        sys.executable, "main.py", "--data", str(corpus), "--epochs", "1", "--log-interval", "10",
        "--emsize", "200", "--nhid", "200", "--nlayers", "2", "--dropout", "0.2", "--lr", "20",
        "--clip", "0.25", "--bptt", str(BPTT), "--batch_size", str(BATCH),
        "--save", str(scratch / "model.pt"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=example, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"the example failed:\n{done.stderr[-2000:]}")
    per_batch = [float(ms) for ms in re.findall(r"ms/batch\s+([\d.]+)", done.stdout)][: steps // 10]
    if len(per_batch) < 2:
        raise SystemExit("the example logged fewer than two speeds; raise --steps")
    return BATCH * BPTT / (statistics.median(per_batch[1:]) / 1000)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--example", type=Path, help="a checkout's word_language_model folder")
    parser.add_argument("--vocab", type=int, default=33278, help="vocabulary size (WikiText-2's)")
    parser.add_argument("--steps", type=int, default=150, help="training steps timed per run")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each per round, alternating")
    args = parser.parse_args()
    print(f"torch threads: {os.environ.get('OMP_NUM_THREADS', 'default')}; V = {args.vocab:,}, 2 x 200 LSTM")
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        corpus = scratch / "corpus"
        corpus.mkdir()
        # The example runs one whole epoch: size the training text to the steps timed (plus the word list).
        write_corpus(corpus, args.vocab, train_tokens=(args.steps + 2) * BATCH * BPTT)
        speeds: dict[str, list[float]] = {"lmtrain": [], "example": []} if args.example else {"lmtrain": []}
        for round_index in range(args.rounds):
            order = list(speeds) if round_index % 2 == 0 else list(speeds)[::-1]
            for name in order:
                if name == "lmtrain":
                    speeds[name].append(lmtrain_speed(corpus, args.steps, scratch))
                else:
                    speeds[name].append(example_speed(args.example, corpus, args.steps, scratch))
        medians = {name: statistics.median(values) for name, values in speeds.items()}
        print("| lmtrain tokens/s | example tokens/s | lmtrain / example |")
        print("|---:|---:|---:|")
        example = medians.get("example")
        ratio = f"{medians['lmtrain'] / example:.2f}x" if example else ""
        example_text = f"{example:,.0f}" if example else "(not run)"
        print(f"| {medians['lmtrain']:,.0f} | {example_text} | {ratio} |")


if __name__ == "__main__":
    main()
