"""Does a gated cell remember the subject's number better than a vanilla RNN? One reproducible command.

    OMP_NUM_THREADS=1 python scripts/agreement_experiment.py

Trains word-level `rnn`, `gru` and `lstm` models on the bundled agreement corpus with the same data and
training recipe (the quickstart config with the overrides in `measure`), once per training seed, and
the same parameter budget: the LSTM's hidden size is given, and the others' are chosen so that their
whole models (embedding, recurrent layer, decoder) have the nearest number of trained parameters. Then,
for each model:

- the agreement probe (`lmtrain probe`, on best.pt): accuracy by distance, with and without attractors;
- the gradient flow g<t> = ‖∂L<T>/∂a<t>‖ (`lmtrain.analysis.grad_flow`), averaged over the first 10 validation
  windows (32 streams, 35 steps, each from a zero state), before training and after.

Writes one PNG with both plots side by side (`--figure`): accuracy pooled over the seeds with the
seeds' lowest and highest as error bars, and the gradient flow averaged over the seeds. Prints Markdown
tables for docs/experiments.md. Runs go to `RUNS/seedS/CELL` (TensorBoard logs included; earlier ones are
overwritten), every number to `RUNS/results.json`; `--report-only` redraws from that file.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from lmtrain.analysis.grad_flow import gradient_flow
from lmtrain.analysis.plots import draw_accuracy, draw_gradient_flows, new_figure, save_figure
from lmtrain.analysis.probe import ProbeCell, build_test_set, known_pairs, model_scorer, run_probe
from lmtrain.checkpoint import load_checkpoint, restore_model
from lmtrain.config import Config, load_config
from lmtrain.data.batching import batchify, get_batch
from lmtrain.data.corpus import load_corpus
from lmtrain.model import RNNLanguageModel
from lmtrain.training.trainer import train

ROOT = Path(__file__).resolve().parent.parent
CELLS = ("rnn", "gru", "lstm")
DISTANCES = (0, 1, 2, 4, 8, 12, 16)


def trained_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def model_size(config: Config, vocab_size: int, cell: str, hidden_size: int) -> int:
    model_config = config.model.model_copy(update={"cell": cell, "hidden_size": hidden_size})
    return trained_parameters(RNNLanguageModel(vocab_size, model_config))


def matching_hidden_size(config: Config, vocab_size: int, cell: str, budget: int) -> int:
    """The hidden size whose model has the number of trained parameters nearest to `budget`."""
    low, high = 1, 4096  # the count grows with the hidden size: bisect for the first one at or above
    while low < high:
        middle = (low + high) // 2
        if model_size(config, vocab_size, cell, middle) < budget:
            low = middle + 1
        else:
            high = middle
    candidates = [size for size in (low - 1, low) if size >= 1]
    return min(candidates, key=lambda size: abs(model_size(config, vocab_size, cell, size) - budget))


def mean_gradient_flow(model: RNNLanguageModel, valid: torch.Tensor, windows: int, batch: int, bptt: int):
    """g<t> averaged over the first `windows` windows of the validation text, each from a zero state."""
    source = batchify(valid, batch)
    norms = [gradient_flow(model, *get_batch(source, i * bptt, bptt)) for i in range(windows)]
    return torch.stack(norms).mean(0)


def measure_seed(args: argparse.Namespace, seed: int, pairs) -> dict:
    """Train the three models with one seed, probe them, measure their gradient flow."""
    base = load_config(
        ROOT / "configs" / "quickstart.yaml",
        [
            f"model.embedding_size={args.embedding}",
            f"train.epochs={args.epochs}",
            f"train.seed={seed}",
            "train.device=cpu",
            "log.grad_flow=true",
            "log.sample_length=0",
        ],
    )
    corpus = load_corpus(base.data)
    vocab_size = corpus.tokenizer.vocab_size
    budget = model_size(base, vocab_size, "lstm", args.lstm_hidden)
    bptt, batch = base.train.bptt, 32
    runs = {}
    for cell in CELLS:
        hidden = matching_hidden_size(base, vocab_size, cell, budget)
        size = model_size(base, vocab_size, cell, hidden)
        print(f"seed {seed}, {cell}: hidden {hidden}, {size:,} trained parameters ({size / budget - 1:+.1%})")
        overrides = {"cell": cell, "hidden_size": hidden}
        run_dir = args.runs / f"seed{seed}" / cell
        config = base.model_copy(
            update={"model": base.model.model_copy(update=overrides), "run_dir": run_dir}
        )
        torch.manual_seed(seed)  # the untrained model the trainer starts from
        untrained = RNNLanguageModel(vocab_size, config.model)
        before = mean_gradient_flow(untrained, corpus.valid, 10, batch, bptt)

        started = time.perf_counter()
        result = train(config, overwrite=True, report=lambda line: None, show_progress=False)
        seconds = time.perf_counter() - started
        best = load_checkpoint(run_dir / "best.pt")
        model, tokenizer, _ = restore_model(best)
        known, _ = known_pairs(pairs, tokenizer, "error")
        probe_cells = run_probe(known, model_scorer(model, tokenizer))
        after = mean_gradient_flow(model, corpus.valid, 10, batch, bptt)
        perplexity = math.exp(result.best_valid_loss)
        print(
            f"seed {seed}, {cell}: {result.steps} steps in {seconds:.0f} s, best valid ppl {perplexity:.2f}"
        )
        runs[cell] = {
            "hidden_size": hidden,
            "parameters": size,
            "steps": result.steps,
            "best_step": best["progress"]["step"],
            "seconds": seconds,
            "best_valid_perplexity": perplexity,
            "probe": [probe_cell.to_dict() for probe_cell in probe_cells],
            "grad_flow_untrained": before.tolist(),
            "grad_flow_trained": after.tolist(),
        }
    return runs


def probe_cells(run: dict) -> list[ProbeCell]:
    return [ProbeCell(c["distance"], c["attractors"], c["pairs"], c["correct"]) for c in run["probe"]]


def pooled(per_seed: list[list[ProbeCell]]) -> list[ProbeCell]:
    """One cell per distance and condition with the pairs and correct answers of every seed summed."""
    return [
        ProbeCell(
            cells[0].distance, cells[0].attractors, sum(c.pairs for c in cells), sum(c.correct for c in cells)
        )
        for cells in zip(*per_seed, strict=True)
    ]


def report(measured: dict, figure_file: Path) -> None:
    """The PNG (probe accuracy and gradient flow side by side) and the Markdown tables."""
    seeds = measured["seeds"]  # seed -> cell -> run
    first = next(iter(seeds.values()))
    cells = list(first)
    per_seed = {cell: [probe_cells(runs[cell]) for runs in seeds.values()] for cell in cells}
    results = {cell: pooled(per_seed[cell]) for cell in cells}
    spread = {}  # (cell, distance, attractors) -> the accuracy of each seed
    for cell in cells:
        for seeds_cells in zip(*per_seed[cell], strict=True):
            key = (cell, seeds_cells[0].distance, seeds_cells[0].attractors)
            spread[key] = [c.accuracy for c in seeds_cells]

    def seed_range(name: str, cell: ProbeCell) -> tuple[float, float]:
        accuracies = spread[(name, cell.distance, cell.attractors)]
        return min(accuracies), max(accuracies)

    def mean_flow(cell: str, key: str) -> list[float]:
        return torch.tensor([runs[cell][key] for runs in seeds.values()]).mean(0).tolist()

    before = {cell: mean_flow(cell, "grad_flow_untrained") for cell in cells}
    after = {cell: mean_flow(cell, "grad_flow_trained") for cell in cells}
    figure = new_figure(12.8, 5.2)
    left, right = figure.subplots(1, 2)
    title = f"agreement probe: accuracy, {len(seeds)} seeds (bars: lowest to highest)"
    draw_accuracy(left, results, title, seed_range)
    draw_gradient_flows(right, before, after, "gradient flow of the top layer, mean of the seeds")
    figure_file.parent.mkdir(parents=True, exist_ok=True)
    save_figure(figure, figure_file)
    print(f"wrote {figure_file} ({figure_file.stat().st_size:,} bytes)\n")

    def row(name: str, values) -> str:
        return f"| {name} | " + " | ".join(values) + " |"

    def per_seed_values(key: str, form: str) -> list[str]:
        return [" / ".join(format(runs[cell][key], form) for runs in seeds.values()) for cell in cells]

    print(row("", [f"`{cell}`" for cell in cells]))
    print("|---|" + "---:|" * len(cells))
    print(row("hidden size", [str(first[cell]["hidden_size"]) for cell in cells]))
    print(row("trained parameters", [f"{first[cell]['parameters']:,}" for cell in cells]))
    print(
        row(
            f"best valid perplexity, seeds {' / '.join(seeds)}",
            per_seed_values("best_valid_perplexity", ".2f"),
        )
    )
    print(row("step of best.pt (probed)", per_seed_values("best_step", "d")))
    print(row("training time (s)", per_seed_values("seconds", ".0f")))
    steps = len(after[cells[0]])
    for t in (steps - 5, steps - 10, steps - 20, 1):
        name = f"g<{t}> / g<{steps}>, trained, mean of seeds"
        print(row(name, [f"{after[cell][t - 1] / after[cell][-1]:.1e}" for cell in cells]))
    print()
    names = {None: "nothing between", False: "no attractors", True: "attractors"}
    print("| distance | nouns between | " + " | ".join(f"`{cell}`" for cell in cells) + " |")
    print("|---:|---|" + "---:|" * len(cells))
    for index, reference in enumerate(results[cells[0]]):
        entries = []
        for cell in cells:
            accuracies = " / ".join(
                f"{cells_of_seed[index].accuracy:.2f}" for cells_of_seed in per_seed[cell]
            )
            entries.append(f"{results[cell][index].accuracy:.3f} ({accuracies})")
        print(f"| {reference.distance} | {names[reference.attractors]} | " + " | ".join(entries) + " |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runs", type=Path, default=Path("runs/agreement"), help="one run folder per seed and cell"
    )
    parser.add_argument("--figure", type=Path, default=Path("docs/agreement-experiment.png"))
    parser.add_argument("--lstm-hidden", type=int, default=128, help="sets the parameter budget")
    parser.add_argument("--embedding", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=200, help="probe pairs per distance and condition")
    parser.add_argument(
        "--seeds", default="1337,1338,1339", help="training seeds (the probe's test set uses 0)"
    )
    parser.add_argument(
        "--report-only", action="store_true", help="redraw the figure and tables from RUNS/results.json"
    )
    args = parser.parse_args(argv)
    results_file = args.runs / "results.json"
    if args.report_only:
        measured = json.loads(results_file.read_text(encoding="utf-8"))
    else:
        pairs = build_test_set(DISTANCES, args.pairs, seed=0)
        seeds = {seed: measure_seed(args, int(seed), pairs) for seed in args.seeds.split(",")}
        measured = {"arguments": {k: str(v) for k, v in vars(args).items()}, "seeds": seeds}
        results_file.parent.mkdir(parents=True, exist_ok=True)
        results_file.write_text(json.dumps(measured, indent=1), encoding="utf-8")
    report(measured, args.figure)


if __name__ == "__main__":
    main()
