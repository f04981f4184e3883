"""The `lmtrain` command line: thin typer commands that call library code.

This is the only module that knows typer, and the only place where lmtrain's errors become a red
line on stderr and an exit code (2 for usage and config mistakes, 1 for failures at run time).
`--debug` (or `LMTRAIN_DEBUG=1`) shows the full traceback instead. In a data-parallel run rank 0
prints; another rank prints only an error of its own, marked with its rank.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer

from lmtrain import __version__
from lmtrain.errors import ConfigError, LmtrainError

if TYPE_CHECKING:
    from lmtrain.config import TrainConfig

app = typer.Typer(
    help="Train recurrent language models (RNN, GRU, LSTM) and generate text from them.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

debug_mode = {"on": os.environ.get("LMTRAIN_DEBUG", "") not in ("", "0")}


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"lmtrain {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=version_callback, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Options that apply to every command."""
    debug_mode["on"] = debug or os.environ.get("LMTRAIN_DEBUG", "") not in ("", "0")
    from lmtrain.fast.kernels.compiler import kernel_mode

    with user_errors():
        kernel_mode()  # a bad LMTRAIN_KERNELS fails here, not in the middle of a run


@contextmanager
def user_errors() -> Iterator[None]:
    """Print an LmtrainError as one red line and exit with its code (unless in debug mode)."""
    try:
        yield
    except LmtrainError as error:
        if debug_mode["on"]:
            raise
        from lmtrain.training.distributed import environment_rank

        rank = environment_rank()
        if rank == 0:
            typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        elif not getattr(error, "reported_by_rank_0", False):
            typer.secho(f"error: rank {rank}: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        if debug_mode["on"]:
            raise
        typer.secho("interrupted", fg=typer.colors.RED, err=True)
        raise typer.Exit(130) from None


@app.command()
def train(
    config: Annotated[
        Path, typer.Argument(metavar="CONFIG", help="YAML config file, e.g. configs/quickstart.yaml.")
    ],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="KEY=VALUE",
            help="Dotted overrides of the config, e.g. train.lr=3e-4 model.cell=gru.",
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in run_dir exactly from its last.pt.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier run in run_dir instead of refusing.")
    ] = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show the tqdm progress bar.")
    ] = True,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="No progress bar and no per-evaluation lines (as log.quiet); for log files."
        ),
    ] = False,
    nproc: Annotated[
        int | None,
        typer.Option(
            "--nproc",
            help="Train data-parallel in N processes on this machine (as torchrun --standalone "
            "--nproc-per-node N -m lmtrain train ...): gloo on CPUs, nccl with one process per GPU; "
            "train.batch_size must be divisible by N.",
        ),
    ] = None,
) -> None:
    """Train a language model as CONFIG says; checkpoints and TensorBoard logs go to its run_dir.

    Under torchrun (`torchrun --nproc-per-node N -m lmtrain train CONFIG`) or with `--nproc N`, the
    processes split each batch's streams between them and rank 0 writes the run directory.
    """
    from lmtrain.config import load_config
    from lmtrain.training.distributed import environment_rank, environment_world, run_local_processes
    from lmtrain.training.trainer import TrainingInterrupted
    from lmtrain.training.trainer import train as run_training

    with user_errors():
        if resume and overwrite:
            raise ConfigError("--resume and --overwrite exclude each other; pick one")
        resolved = load_config(config, overrides or [])
        if quiet:
            resolved.log.quiet = True
        if nproc is not None:
            check_nproc(nproc, resolved.train)
        if nproc is not None and nproc > 1:
            given = {"--resume": resume, "--overwrite": overwrite, "--no-progress": not progress, "-q": quiet}
            flags = [flag for flag, on in given.items() if on]
            debug = ["--debug"] if debug_mode["on"] else []  # a global option: before the command
            worker_args = [*debug, "train", str(config), *(overrides or []), *flags]
            raise typer.Exit(run_local_processes(nproc, worker_args))
        try:
            result = run_training(resolved, overwrite=overwrite, resume=resume, show_progress=progress)
        except TrainingInterrupted as stopped:
            again = " ".join(["lmtrain train", str(config), *(overrides or []), "--resume"])
            world_size, local_world_size = environment_world()
            if world_size > 1 and local_world_size == world_size:
                again += f" --nproc {world_size}"
            elif world_size > 1:
                again = f"the same torchrun command with {again}"
            stopped.args = (f"{stopped}; continue with: {again}",)
            raise
        if environment_rank() != 0:
            return
        unit = "bpc" if result.tokenizer_kind == "char" else ""
        final = result.final_valid
        best_perplexity = math.exp(min(result.best_valid_loss, 700.0))
        typer.echo(
            f"done: {result.steps} steps in {result.seconds:.1f} s ({result.tokens_per_second:,.0f} tokens/s)"
        )
        typer.echo(
            f"validation perplexity {final.perplexity:.2f} (best {best_perplexity:.2f}); "
            f"unigram baseline {result.unigram_perplexity:.2f}"
            + (f"; {final.bits_per_token:.4f} {unit}" if unit else "")
        )
        typer.echo(f"checkpoints: {result.run_dir / 'best.pt'}, {result.run_dir / 'last.pt'}")
        typer.echo(f"generate text: lmtrain sample {result.run_dir / 'best.pt'} --temperature 0.8")


def check_nproc(nproc: int, train_config: TrainConfig) -> None:
    """Refuse an `--nproc N` that cannot work, before any process starts."""
    from lmtrain.training.distributed import check_launch, environment_world, launched_by_torchrun

    if launched_by_torchrun():
        raise ConfigError(
            f"--nproc starts its own processes, and this process already is one of {environment_world()[0]} "
            "started by torchrun; drop --nproc (torchrun decides the process count) or run without torchrun"
        )
    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1 (got {nproc})")
    check_launch(train_config, nproc)


DEVICE_HELP = (
    "Device to run on: cpu, cuda, mps, or auto (the first available); any checkpoint runs on the CPU."
)
UNKNOWN_HELP = "error (name them and stop), map (to <unk>; word models) or skip (drop them)."
WEIGHT_DTYPES = ("fp32", "bf16")
WEIGHTS_HELP = (
    "fp32 (as trained) or bf16: every weight rounded to bfloat16, the arithmetic still fp32; on a CPU "
    "one or a few samples generate up to twice as fast (half the bytes to read per token)."
)
ROUNDED_WEIGHTS_HELP = "fp32 (as trained) or bf16: the weights `sample --weights bf16` generates with."


def inference_device(name: str):
    """The torch device named by `--device` (`auto`: cuda, then mps, then cpu)."""
    from lmtrain.devices import resolve_device

    if name not in ("cpu", "cuda", "mps", "auto"):
        raise ConfigError(f"--device must be cpu, cuda, mps or auto (got {name!r})")
    try:
        return resolve_device(name)
    except ConfigError:
        what = "no CUDA GPU is available" if name == "cuda" else "Apple's MPS is not available"
        raise ConfigError(f"--device {name}: {what}; use --device cpu") from None


def open_checkpoint(path: Path, device: str, weights: str = "fp32"):
    """The model (in eval mode, on `device`, its weights rounded as `--weights` says), tokenizer and
    config of a checkpoint file.

    `load_checkpoint` reads every tensor onto the CPU (`map_location="cpu"`), whatever device the
    weights were on when saved; the model moves to `device` only afterwards.
    """
    import torch

    from lmtrain.checkpoint import load_checkpoint, restore_model

    if weights not in WEIGHT_DTYPES:
        raise ConfigError(f"--weights must be one of {', '.join(WEIGHT_DTYPES)}, got {weights!r}")
    torch_device = inference_device(device)
    model, tokenizer, config = restore_model(load_checkpoint(path), torch_device)
    if weights == "bf16":
        model.round_weights(torch.bfloat16)
    return model, tokenizer, config


@contextmanager
def output_stream(path: Path | None) -> Iterator[TextIO]:
    """stdout, or the file at `path` (UTF-8), opened for writing."""
    if path is None:
        yield sys.stdout
        return
    try:
        file = open(path, "w", encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot write --output {path}: {error.strerror or error}") from None
    with file:
        yield file


@app.command()
def sample(
    checkpoint: Annotated[
        Path, typer.Argument(metavar="CHECKPOINT", help="A checkpoint written by `lmtrain train` (best.pt).")
    ],
    temperature: Annotated[
        float, typer.Option(help="Softmax temperature (> 0): below 1 is more conservative, above 1 wilder.")
    ] = 1.0,
    greedy: Annotated[
        bool, typer.Option("--greedy", help="Always take the most probable token (argmax).")
    ] = False,
    top_k: Annotated[
        int | None, typer.Option("--top-k", help="Sample only among the K most probable tokens.")
    ] = None,
    top_p: Annotated[
        float | None,
        typer.Option(
            "--top-p", help="Nucleus sampling: the fewest most probable tokens whose probability reaches P."
        ),
    ] = None,
    length: Annotated[int, typer.Option(help="Maximum number of tokens to generate per sample.")] = 200,
    num_samples: Annotated[
        int, typer.Option("--num-samples", help="How many samples, generated together as one batch.")
    ] = 1,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same text.")] = 0,
    prime: Annotated[str, typer.Option(help="Text to condition on; printed before the continuation.")] = "",
    stop: Annotated[
        bool, typer.Option("--stop/--no-stop", help="Word models: stop each sample at its first <eos>.")
    ] = True,
    no_unk: Annotated[
        bool, typer.Option("--no-unk", help="Word models: never generate <unk> (as if resampled until not).")
    ] = False,
    unknown: Annotated[
        str, typer.Option(help="Prompt tokens outside the vocabulary: " + UNKNOWN_HELP)
    ] = "error",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the text to this file instead of stdout.")
    ] = None,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "cpu",
    weights: Annotated[str, typer.Option(help=WEIGHTS_HELP)] = "fp32",
) -> None:
    """Generate text from a checkpoint alone; <eos> is written as a line break.

    One sample streams out token by token; several are written one after another (one line each for
    word models that stop at <eos>, otherwise separated by a blank line).
    """
    from lmtrain.generation.sampling import (
        SamplingOptions,
        TextStream,
        check_sample_request,
        encode_text,
        generate_steps,
    )

    with user_errors():
        model, tokenizer, _ = open_checkpoint(checkpoint, device, weights)
        options = SamplingOptions(temperature, greedy, top_k, top_p, no_unk)
        check_sample_request(options, tokenizer, length, num_samples, unknown)
        prompt_ids = encode_text(tokenizer, prime, unknown) if prime else []
        steps = generate_steps(model, tokenizer, length, options, prompt_ids, num_samples, seed, stop)
        streams = [TextStream(tokenizer) for _ in range(num_samples)]
        texts = ["".join(stream.piece(token) for token in prompt_ids) for stream in streams]
        with output_stream(output) as out:
            if num_samples == 1:
                write_now(out, texts[0])
                for (token,) in steps:
                    write_now(out, streams[0].piece(token))
                write_now(out, streams[0].end())
            else:
                for step in steps:
                    for i, token in enumerate(step):
                        if token is not None:
                            texts[i] += streams[i].piece(token)
                texts = [text + stream.end() for text, stream in zip(texts, streams, strict=True)]
                # Word samples that stop at <eos> are one line each; others may span lines.
                out.write(("" if tokenizer.kind == "word" and stop else "\n").join(texts))
        if output is not None:
            typer.echo(f"wrote {num_samples} sample(s) to {output}", err=True)


def write_now(out: TextIO, text: str) -> None:
    """Write and flush, so generated text appears as it is produced."""
    out.write(text)
    out.flush()


data_app = typer.Typer(
    help="List the corpora known by name and download them into the cache.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(data_app, name="data")


@data_app.command("list")
def data_list() -> None:
    """List the named corpora, where they come from, and whether they are ready offline."""
    from lmtrain.data.datasets import DATASETS, cache_dir, data_mirror, is_available

    with user_errors():
        cache, mirror = cache_dir(), data_mirror()
        for dataset in DATASETS.values():
            if not dataset.downloads:
                status = "bundled"
            elif all((cache / download.path).exists() for download in dataset.downloads):
                status = "cached"
            elif is_available(dataset, cache, mirror):
                status = "in mirror"
            else:
                status = "not downloaded"
            typer.echo(f"{dataset.name:<16} {dataset.tokenizer:<5} {status:<15} {dataset.description}")
            typer.echo(f"{'':<16} splits: {dataset.split_note}; license: {dataset.license}")
        typer.echo(f"cache: {cache} (LMTRAIN_CACHE)" + (f"; mirror: {mirror}" if mirror else ""))


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A corpus name from `lmtrain data list`.")],
) -> None:
    """Download NAME (or copy it from LMTRAIN_DATA_MIRROR) into the cache, verify it, prepare its splits."""
    from lmtrain.data.datasets import cache_dir, data_mirror, fetch_dataset, get_dataset

    with user_errors():
        paths = fetch_dataset(get_dataset(name), cache_dir(), data_mirror())
        for split in ("train", "valid", "test"):
            path = getattr(paths, split)
            if path is not None:
                typer.echo(f"{split:<5} {path} ({path.stat().st_size:,} bytes)")


@app.command()
def score(
    checkpoint: Annotated[
        Path, typer.Argument(metavar="CHECKPOINT", help="A checkpoint written by `lmtrain train` (best.pt).")
    ],
    texts: Annotated[
        list[str] | None, typer.Argument(metavar="TEXT", help="Texts to score, one per argument.")
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Score each non-blank line of this UTF-8 file.")
    ] = None,
    per_token: Annotated[
        bool, typer.Option("--per-token", help="Also show the probability of every token.")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
    unknown: Annotated[str, typer.Option(help="Tokens outside the vocabulary: " + UNKNOWN_HELP)] = "error",
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "cpu",
    weights: Annotated[str, typer.Option(help=ROUNDED_WEIGHTS_HELP)] = "fp32",
) -> None:
    """Score texts: log P in nats and bits, the mean per token and the perplexity, most probable first.

    Word models score the words, each line break as <eos>, and a final <eos>, each word predicted after
    the <eos> that starts a line; character models score the characters and a final line break,
    after a line break. Compare texts of similar length by total log P. A bidirectional checkpoint also
    reports its backward model's score (right to left).
    """
    from lmtrain.generation.scoring import format_scores, read_inputs, score_texts, scores_to_dict

    with user_errors():
        if texts and file is not None:
            raise ConfigError("give TEXT arguments or --file, not both")
        if file is not None:
            texts = read_inputs(file)
        model, tokenizer, _ = open_checkpoint(checkpoint, device, weights)
        scores = score_texts(model, tokenizer, texts or [], unknown)
        if json_output:
            report = {"checkpoint": str(checkpoint), **scores_to_dict(scores, tokenizer.kind, per_token)}
            typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
        else:
            typer.echo(format_scores(scores, tokenizer.kind, per_token))


@app.command("eval")
def eval_command(
    checkpoint: Annotated[
        Path, typer.Argument(metavar="CHECKPOINT", help="A checkpoint written by `lmtrain train` (best.pt).")
    ],
    file: Annotated[Path | None, typer.Option("--file", "-f", help="A UTF-8 text file to evaluate.")] = None,
    split: Annotated[
        str | None,
        typer.Option(help="Evaluate a split of the checkpoint's data config instead: valid or test."),
    ] = None,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            help="Parallel streams the text is cut into; 1 reads it whole. The run's train.eval_batch_size "
            "reproduces the trainer's validation numbers.",
        ),
    ] = 1,
    bptt: Annotated[
        int | None, typer.Option(help="Window length in tokens (default: the run's train.bptt).")
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of text.")
    ] = False,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "cpu",
    weights: Annotated[str, typer.Option(help=ROUNDED_WEIGHTS_HELP)] = "fp32",
) -> None:
    """Perplexity (and bits per character) of a text, read with the carried state the trainer uses.

    A bidirectional checkpoint reports the mean of its two directions' losses, as the trainer does.
    """
    from lmtrain.training.evaluation import evaluate_file, split_path

    with user_errors():
        if (file is None) == (split is None):
            raise ConfigError("give either --file FILE or --split valid|test")
        model, tokenizer, config = open_checkpoint(checkpoint, device, weights)
        bptt = config.train.bptt if bptt is None else bptt
        if file is not None:
            report = evaluate_file(model, tokenizer, file, batch_size, bptt)
        else:
            # The split exactly as the trainer read it: same decoding errors policy and token limit.
            data = config.data
            path = split_path(config, split)
            report = evaluate_file(model, tokenizer, path, batch_size, bptt, data.errors, data.max_tokens)
        if json_output:
            typer.echo(json.dumps({"checkpoint": str(checkpoint), **report.to_dict()}, indent=2))
            return
        result = report.result
        line = f"perplexity {result.perplexity:.3f} | loss {result.loss:.4f} nats/token"
        if tokenizer.kind == "char":
            line += f" | {result.bits_per_token:.4f} bits/char"
        else:
            line += f" | {result.bits_per_token:.4f} bits/token"
        typer.echo(line)
        detail = (
            f"{shown_path(report.path)}: {report.text_tokens:,} tokens, {result.tokens:,} predicted "
            f"(batch size {report.batch_size}, bptt {report.bptt})"
        )
        if tokenizer.kind == "word":
            detail += f"; <unk>: {report.unk_tokens:,} ({report.unk_tokens / report.text_tokens:.1%})"
        if report.bidirectional:
            detail += "; bidirectional: the mean of the forward and backward models' losses, as in training"
        typer.echo(detail)


@app.command()
def probe(
    checkpoint: Annotated[
        Path, typer.Argument(metavar="CHECKPOINT", help="A word-level checkpoint written by `lmtrain train`.")
    ],
    distances: Annotated[
        str, typer.Option(help="Comma-separated numbers of words between subject and verb.")
    ] = "0,1,2,4,8,12,16",
    pairs_per_distance: Annotated[
        int,
        typer.Option(
            "--pairs-per-distance", help="Minimal pairs per distance and attractor condition (distinct)."
        ),
    ] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the test set: the same seed gives the same pairs.")] = 0,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of the table.")
    ] = False,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write a PNG plot of accuracy against distance to FILE.")
    ] = None,
    tensorboard: Annotated[
        Path | None,
        typer.Option(
            "--tensorboard",
            help="Write the plot and the accuracies as TensorBoard events into this folder, at the "
            "checkpoint's step (give the run directory to see them beside its training curves).",
        ),
    ] = None,
    unknown: Annotated[
        str,
        typer.Option(
            help="Probe words outside the vocabulary: error (name them and stop) or skip (drop those pairs)."
        ),
    ] = "error",
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "cpu",
) -> None:
    """Subject-verb agreement across distance: how often the model prefers the grammatical verb.

    Scores minimal pairs from the agreement grammar ("the cat near the tables is" / "... are") that
    put 0, 1, 2, 4, 8, ... words between subject and verb, with the nouns between of the subject's
    number (no attractors) or the other number (attractors). A pair is correct when the grammatical
    verb is more probable after the shared prefix.
    """
    from lmtrain.analysis.probe import (
        build_test_set,
        format_table,
        known_pairs,
        model_scorer,
        parse_distances,
        probe_to_dict,
        run_probe,
    )
    from lmtrain.checkpoint import load_checkpoint, restore_model

    with user_errors():
        chosen = parse_distances(distances)
        pairs = build_test_set(chosen, pairs_per_distance, seed)
        content = load_checkpoint(checkpoint)
        model, tokenizer, config = restore_model(content, inference_device(device))
        pairs, skipped = known_pairs(pairs, tokenizer, unknown)
        cells = run_probe(pairs, model_scorer(model, tokenizer))
        step = int((content.get("progress") or {}).get("step", 0))
        what = f"{config.model.cell}, {config.model.num_layers} x {config.model.hidden_size}, step {step}"
        figure = None
        if plot is not None or tensorboard is not None:
            from lmtrain.analysis.plots import accuracy_figure  # matplotlib loads only for a plot

            figure = accuracy_figure(cells, f"agreement probe: {what}")
        if plot is not None:
            write_figure(figure, plot)
        if tensorboard is not None:
            log_probe(tensorboard, step, cells, figure)
        if json_output:
            report = {
                "checkpoint": str(checkpoint),
                "step": step,
                "seed": seed,
                "pairs_per_distance": pairs_per_distance,
                "skipped_pairs": skipped,
                **probe_to_dict(cells),
            }
            typer.echo(json.dumps(report, indent=2))
        else:
            typer.echo(f"agreement probe of {checkpoint} ({what}); seed {seed}")
            typer.echo("accuracy: share of pairs whose grammatical verb is more probable [95% interval]")
            typer.echo(format_table(cells))
            if skipped:
                typer.echo(f"skipped {skipped} pair(s) with words outside the vocabulary (--unknown skip)")
        if plot is not None:
            typer.echo(f"wrote {plot}", err=True)


def write_figure(figure, path: Path) -> None:
    """Write a matplotlib figure as a PNG file; an unwritable path is a ConfigError."""
    from lmtrain.analysis.plots import save_figure

    try:
        save_figure(figure, path)
    except OSError as error:
        raise ConfigError(f"cannot write --plot {path}: {error.strerror or error}") from None


def log_probe(folder: Path, step: int, cells, figure) -> None:
    """The probe's plot (`probe/accuracy`) and one scalar per cell (`probe/d08_attractors`, ...)."""
    from lmtrain.training.metrics import TensorBoardLogger

    names = {None: "nothing_between", False: "no_attractors", True: "attractors"}
    try:
        logger = TensorBoardLogger(folder)
    except OSError as error:
        raise ConfigError(f"cannot write --tensorboard {folder}: {error.strerror or error}") from None
    try:
        logger.scalars(
            step, {f"probe/d{cell.distance:02d}_{names[cell.attractors]}": cell.accuracy for cell in cells}
        )
        logger.figure(step, "probe/accuracy", figure)
    finally:
        logger.close()


def shown_path(path: Path) -> Path:
    """`path` relative to the working directory when it lies inside it, as the user would type it."""
    try:
        return Path(path).resolve().relative_to(Path.cwd())
    except ValueError:
        return Path(path)


def main() -> None:
    """Entry point of the `lmtrain` console script."""
    app()
