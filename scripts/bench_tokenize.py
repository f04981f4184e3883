"""Measure streamed tokenization on a generated text file: throughput and peak memory.

    python scripts/bench_tokenize.py            # 200 MB, char and word, first run and cached run
    python scripts/bench_tokenize.py --mb 20    # a quicker look

The text (Zipf-distributed words from a 50,000-word vocabulary, 5 to 25 words a line) is written to
a temporary folder and deleted at the end, together with the cache it tokenizes into. Each
measurement runs in a fresh Python process, so its peak resident memory (`ru_maxrss`) belongs to that
measurement alone; the baseline line shows what importing lmtrain (torch, numpy) costs by itself.
A "first" run builds the vocabulary and writes the memory-mapped ids; a "cached" run hashes the
file and maps the ids the first run left.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

MEASURE = r"""
import json, resource, sys, time
from pathlib import Path
from lmtrain.config import DataConfig
from lmtrain.data import corpus

path, kind, cache = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
result = {"kind": kind}
if kind != "baseline":
    data = DataConfig(train=path, valid=path, tokenizer=kind)
    started = time.perf_counter()
    tokenizer, key = corpus.cached_tokenizer(data, path, cache)
    ids = corpus.cached_ids(tokenizer, key, path, "strict", "training file", cache)
    result.update(seconds=time.perf_counter() - started, tokens=len(ids), vocab=tokenizer.vocab_size,
                  dtype=str(ids.dtype))
result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(result))
"""


def write_text(path: Path, megabytes: float, seed: int = 0) -> None:
    """Zipf-like English-looking text: a few words are frequent, most are rare."""
    rng = random.Random(seed)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    vocab = sorted({"".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(60_000)})[:50_000]
    rng.shuffle(vocab)
    weights = [1.0 / (rank + 1) for rank in range(len(vocab))]
    target = int(megabytes * 1e6)
    with open(path, "w", encoding="utf-8") as out:
        written = 0
        while written < target:
            words = rng.choices(vocab, weights, k=200_000)
            lines, start = [], 0
            while start < len(words):
                length = rng.randint(5, 25)
                lines.append(" ".join(words[start : start + length]))
                start += length
            block = "\n".join(lines) + "\n"
            out.write(block)
            written += len(block)


def measure(path: Path, kind: str, cache: Path) -> dict:
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    output = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path), kind, str(cache)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=200.0, help="size of the generated text in MB")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lmtrain-bench-") as folder:
        path = Path(folder) / "text.txt"
        write_text(path, args.mb)
        size_mb = path.stat().st_size / 1e6
        print(f"text: {size_mb:.1f} MB at {path} (deleted afterwards)")
        baseline = measure(path, "baseline", Path(folder) / "cache")
        print(f"baseline (import lmtrain, torch, numpy): peak RSS {baseline['peak_rss_mb']:.0f} MB")
        print("| tokenizer | run | time | throughput | tokens | vocabulary | ids | peak RSS |")
        print("|---|---|---:|---:|---:|---:|---|---:|")
        for kind in ("char", "word"):
            cache = Path(folder) / f"cache-{kind}"
            for run in ("first", "cached"):
                result = measure(path, kind, cache)
                print(
                    f"| {kind} | {run} | {result['seconds']:.1f} s | {size_mb / result['seconds']:.1f} MB/s "
                    f"| {result['tokens']:,} | {result['vocab']:,} | {result['dtype']} "
                    f"| {result['peak_rss_mb']:.0f} MB |"
                )


if __name__ == "__main__":
    main()
