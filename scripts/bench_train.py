"""End-to-end training speed of `lmtrain train` on the shipped configs, one backend against another.

    python scripts/bench_train.py                                   # every shipped config, every backend
    python scripts/bench_train.py --configs quickstart ptb-small --impls auto native --rounds 3
    python scripts/bench_train.py --steps 300 -- train.batch_size=64   # extra overrides after --
    python scripts/bench_train.py --impls fused --variants no-panels:LMTRAIN_FAST_OFF=panels \
        no-kernels:LMTRAIN_KERNELS=torch                                # what pieces of the fast layer gain

Each measurement is a real `lmtrain train CONFIG` process, evaluation and sampling off, for `--steps`
optimizer steps; its speed is the median of the `train/tokens_per_second` scalars it logs to TensorBoard
(one every `log.log_interval` steps), leaving out the first interval, which holds start-up. The backends
of one config run one after another in a round, and the order reverses every round, so drift of a shared
machine falls on all of them alike. The table shows each backend's median tokens/s over the rounds and
its ratio to the fastest of the others.

Corpora that are not bundled (ptb, wikitext2) must be in the cache or in `LMTRAIN_DATA_MIRROR`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(path.stem for path in (ROOT / "configs").glob("*.yaml"))


def tokens_per_second(run_dir: Path) -> float:
    """The median of a run's `train/tokens_per_second` scalars after the first."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    values = [event.value for event in events.Scalars("train/tokens_per_second")]
    if len(values) < 2:
        raise SystemExit(f"{run_dir}: fewer than two speed readings; raise --steps")
    return statistics.median(values[1:])


def train(
    config: str, impl: str, steps: int, overrides: list[str], scratch: Path, env: dict[str, str] | None = None
) -> float:
    """Tokens/s of one `lmtrain train` process (with ``env`` added to this process's environment)."""
    run_dir = scratch / f"{config}-{impl}"
    command = [
        sys.executable, "-m", "lmtrain", "train", str(ROOT / "configs" / f"{config}.yaml"),
        f"run_dir={run_dir}", f"model.impl={impl}", f"train.max_steps={steps}",
        "train.eval_interval=1000000000", "log.sample_length=0", "log.quiet=true", "log.log_interval=10",
        *overrides, "--overwrite",
    ]  # fmt: skip
    environment = {**os.environ, **(env or {})}
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=environment)
    if done.returncode != 0:
        raise SystemExit(f"{config} ({impl}) failed:\n{done.stderr[-2000:]}")
    return tokens_per_second(run_dir)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", nargs="+", default=SHIPPED, choices=SHIPPED)
    parser.add_argument("--impls", nargs="+", default=["auto", "reference", "native", "fused"])
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each backend per config")
    parser.add_argument(
        "--variants", nargs="+", default=[], help="NAME:VAR=VALUE,... runs of the first backend, with env"
    )
    parser.add_argument("overrides", nargs="*", help="extra KEY=VALUE overrides, after --")
    args = parser.parse_args()
    print(f"torch threads: {os.environ.get('OMP_NUM_THREADS', 'default')}; {args.steps} steps a run")
    if args.variants:
        runs = {"plain": (args.impls[0], {})}
        for spec in args.variants:
            name, _, assignments = spec.partition(":")
            runs[name] = (args.impls[0], dict(pair.split("=", 1) for pair in assignments.split(",") if pair))
    else:
        runs = {impl: (impl, {}) for impl in args.impls}
    print(f"| config | {' | '.join(runs)} | {'plain / variant' if args.variants else 'auto / best other'} |")
    print("|---|" + "---:|" * (len(runs) + 1))
    with tempfile.TemporaryDirectory() as scratch:
        for config in args.configs:
            speeds: dict[str, list[float]] = {name: [] for name in runs}
            for round_index in range(args.rounds):
                order = list(runs) if round_index % 2 == 0 else list(runs)[::-1]
                for name in order:
                    impl, env = runs[name]
                    speeds[name].append(train(config, impl, args.steps, args.overrides, Path(scratch), env))
            medians = {name: statistics.median(values) for name, values in speeds.items()}
            cells = " | ".join(f"{medians[name]:,.0f}" for name in runs)
            if args.variants:
                variants = [name for name in runs if name != "plain"]
                gains = (f"{name} {medians['plain'] / medians[name]:.2f}x" for name in variants)
                ratios = ", ".join(gains)
            else:
                others = [value for name, value in medians.items() if name != "auto"]
                ratios = f"{medians['auto'] / max(others):.2f}x" if "auto" in medians and others else ""
            print(f"| {config} | {cells} | {ratios} |", flush=True)

if __name__ == "__main__":
    main()
