"""Print the gradient-flow measurements of finished runs as a Markdown table (for docs/experiments.md).

    lmtrain train configs/quickstart.yaml model.cell=rnn log.grad_flow=true run_dir=runs/gf-rnn
    lmtrain train configs/quickstart.yaml log.grad_flow=true run_dir=runs/gf-lstm
    python scripts/grad_flow_table.py runs/gf-rnn runs/gf-lstm

For each run and each evaluation it reads ‖∂L<T>/∂a<t>‖ at t = T, T - 10, T - 20, T - 30 and t = 1 and the
ratio g<1> / g<T> from the run's TensorBoard events.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def rows(run_dir: Path) -> list[str]:
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = sorted(tag for tag in accumulator.Tags()["scalars"] if tag.startswith("grad_flow/t"))
    by_step: dict[int, dict[int, float]] = {}
    for tag in tags:
        t = int(tag.removeprefix("grad_flow/t"))
        for event in accumulator.Scalars(tag):
            by_step.setdefault(event.step, {})[t] = event.value
    lines = []
    for step, norms in sorted(by_step.items()):
        last = max(norms)
        picks = [norms.get(t) for t in (last, last - 10, last - 20, last - 30, 1)]
        cells = " | ".join(f"{value:.1e}" if value is not None else "" for value in picks)
        lines.append(f"| {run_dir.name} | {step} | {cells} | {norms[1] / norms[last]:.1e} |")
    return lines


def main(run_dirs: list[str]) -> None:
    print("| run | step | g<T> | g<T-10> | g<T-20> | g<T-30> | g<1> | g<1> / g<T> |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for run_dir in run_dirs:
        print("\n".join(rows(Path(run_dir))))


if __name__ == "__main__":
    main(sys.argv[1:])
