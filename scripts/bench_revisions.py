"""The LSTM layer alone, as written at several git revisions, against `nn.LSTM`: one window's forward and
backward, all in one process, interleaved.

    python scripts/bench_revisions.py 754a0b4 7b4904a WORKTREE         # H = 128, 512, 1024
    python scripts/bench_revisions.py HEAD~1 WORKTREE --hidden 256 --reps 10
    python scripts/bench_revisions.py WORKTREE:onednn WORKTREE:panels --hidden 512 1024

A version may name the backend of the per-step products after a colon (`REV:panels`, `REV:onednn`,
`REV:addmm`; see `lmtrain/cells/step_product.py`): its runs then force that `StepProduct` backend, so
two product kernels can be compared side by side on the same window code.

Each revision's `lmtrain/cells/lstm_bptt.py` is read with `git show REV:lmtrain/cells/lstm_bptt.py`
(`WORKTREE`: the file as it is on disk) and loaded as its own module; what it imports from the rest of
`lmtrain` comes from the working tree. So this compares versions of the window function, not of the whole
package, and a revision whose window uses the C kernels (`lmtrain.kernels`) through another interface than
the working tree's cannot run (4491231 to 3a0d228; earlier revisions have no kernels). The window is the
one `LSTMLayer.forward` runs: `lstm_window(x, weight_ax, bias, weight_aa, a0, c0)` with x `[T, B, H]`
(E = H), then `y.backward` with a fixed random gradient. `nn.LSTM` gets the same
input and gradient. The order of the calls reverses every repetition; the table shows the median time
of each and the median, over repetitions, of `nn.LSTM`'s time divided by the version's.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lmtrain.cells.step_product import StepProduct  # noqa: E402

WINDOW_FILE = "lmtrain/cells/lstm_bptt.py"


def window_module(revision: str, folder: Path) -> ModuleType:
    """`lstm_bptt` as it is at `revision` (or on disk for WORKTREE), loaded under its own name."""
    if revision == "WORKTREE":
        source = (ROOT / WINDOW_FILE).read_text()
    else:
        source = subprocess.run(
            ["git", "show", f"{revision}:{WINDOW_FILE}"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    path = folder / f"lstm_bptt_{len(list(folder.iterdir()))}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def product_backend(backend: str | None):
    """`StepProduct` forced to `backend` inside the block (its own choice when None)."""
    if backend is None:
        yield
        return
    chosen = StepProduct.__dict__["choose_backend"]  # the staticmethod itself, to put back as it was
    StepProduct.choose_backend = staticmethod(lambda weight, short_loop: backend)
    try:
        yield
    finally:
        StepProduct.choose_backend = chosen


def window_runs(modules: dict[str, ModuleType], hidden: int, steps: int, batch: int) -> dict[str, Callable]:
    """One forward-and-backward call per version, and one for `nn.LSTM`, on the same data."""
    torch.manual_seed(0)
    x = torch.randn(steps, batch, hidden, requires_grad=True)
    weight_ax = (0.05 * torch.randn(4 * hidden, hidden)).requires_grad_()
    weight_aa = (0.05 * torch.randn(4 * hidden, hidden)).requires_grad_()
    bias = torch.zeros(4 * hidden, requires_grad=True)
    a0, c0 = torch.zeros(batch, hidden), torch.zeros(batch, hidden)
    grad_y = torch.randn(steps, batch, hidden)
    reference = torch.nn.LSTM(hidden, hidden)

    def ours(name: str, module: ModuleType) -> Callable[[], None]:
        backend = name.partition(":")[2] or None

        def run() -> None:
            with product_backend(backend):
                y, _ = module.lstm_window(x, weight_ax, bias, weight_aa, a0, c0)
                y.backward(grad_y)

        return run

    def native() -> None:
        y, _ = reference(x)
        y.backward(grad_y)

    return {**{name: ours(name, module) for name, module in modules.items()}, "nn.LSTM": native}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "revisions",
        nargs="+",
        help="git revisions, or WORKTREE for the file on disk; REV:BACKEND forces a product backend",
    )
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 512, 1024])
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 24 * 256 / H, >= 6)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--bptt", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        modules = {
            version: window_module(version.partition(":")[0], Path(folder)) for version in args.revisions
        }
    print(
        f"LSTM layer alone, one window forward+backward: B={args.batch}, T={args.bptt}, E=H; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads\n"
    )
    print("| H | version | ms (median) | nn.LSTM time / ours (median) |")
    print("|---:|---|---:|---:|")
    for hidden in args.hidden:
        runs = window_runs(modules, hidden, args.bptt, args.batch)
        for run in runs.values():
            run()  # warm up
        seconds = {name: [] for name in runs}
        for rep in range(args.reps or max(6, 24 * 256 // hidden)):
            for name in list(runs) if rep % 2 == 0 else list(runs)[::-1]:
                started = time.perf_counter()
                runs[name]()
                seconds[name].append(time.perf_counter() - started)
        for name, times in seconds.items():
            ratio = statistics.median(n / t for n, t in zip(seconds["nn.LSTM"], times, strict=True))
            print(f"| {hidden} | {name} | {1e3 * statistics.median(times):,.1f} | {ratio:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
