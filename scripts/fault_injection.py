"""Kill training with SIGKILL at random moments and check that `last.pt` always loads and resumes.

    python scripts/fault_injection.py --kills 20

Each round starts `lmtrain train` on a small config that checkpoints every step (so kills often land
in the middle of a save), waits until the first checkpoint exists, sleeps a random time, sends
SIGKILL, then checks that `last.pt` loads with `load_checkpoint` and that `lmtrain train --resume`
continues from it. Prints "N kills, M resumable checkpoints"; M == N is the pass mark.
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from lmtrain.checkpoint import load_checkpoint
from lmtrain.data.agreement import generate_corpus
from lmtrain.errors import LmtrainError


def write_setup(folder: Path) -> Path:
    """A small corpus and a config that saves a checkpoint after every step."""
    (folder / "train.txt").write_text("\n".join(generate_corpus(2000, seed=1)) + "\n")
    (folder / "valid.txt").write_text("\n".join(generate_corpus(50, seed=2)) + "\n")
    config = {
        "run_dir": str(folder / "run"),
        "data": {"train": str(folder / "train.txt"), "valid": str(folder / "valid.txt")},
        "model": {"cell": "lstm", "embedding_size": 32, "hidden_size": 64, "num_layers": 2},
        "train": {"batch_size": 8, "bptt": 20, "max_steps": 1_000_000, "eval_interval": 1, "device": "cpu"},
        "log": {"tensorboard": False, "sample_length": 0},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def lmtrain(*args: str) -> list[str]:
    return [sys.executable, "-m", "lmtrain", *args]


def one_round(config: Path, last: Path, rng: random.Random, first: bool) -> tuple[bool, str]:
    """Start (or resume) training, kill it, and check the checkpoint. Returns (resumable, detail)."""
    command = lmtrain("train", str(config), "--no-progress", "--overwrite" if first else "--resume")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    start_mtime = last.stat().st_mtime_ns if last.exists() else 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if last.exists() and last.stat().st_mtime_ns != start_mtime:
            break
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 1.5))
    process.send_signal(signal.SIGKILL)
    process.wait()
    try:
        step = load_checkpoint(last)["progress"]["step"]
    except LmtrainError as error:
        return False, f"last.pt does not load: {error}"
    resumed = subprocess.run(
        lmtrain("train", str(config), "--resume", "--no-progress", f"train.max_steps={step + 1}"),
        capture_output=True,
        text=True,
    )
    if resumed.returncode != 0:
        return False, f"resume failed: {resumed.stderr.strip()}"
    return True, f"killed after step {step}, resumed to step {step + 1}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=20, help="how many SIGKILLs to inflict")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill timings")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = write_setup(folder)
        last = folder / "run" / "last.pt"
        resumable = 0
        for round_number in range(args.kills):
            ok, detail = one_round(config, last, rng, first=round_number == 0)
            resumable += ok
            print(f"kill {round_number + 1:>3}: {'ok  ' if ok else 'FAIL'} {detail}", flush=True)
    print(f"{args.kills} kills, {resumable} resumable checkpoints")
    return 0 if resumable == args.kills else 1


if __name__ == "__main__":
    sys.exit(main())
