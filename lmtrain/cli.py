"""The `lmtrain` command line: thin typer commands that call library code.

This is the only module that knows typer, and the only place where lmtrain's errors become a red
line on stderr and an exit code (2 for usage and config mistakes, 1 for failures at run time).
`--debug` (or `LMTRAIN_DEBUG=1`) shows the full traceback instead.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from lmtrain import __version__
from lmtrain.errors import ConfigError, LmtrainError

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


@contextmanager
def user_errors() -> Iterator[None]:
    """Print an LmtrainError as one red line and exit with its code (unless in debug mode)."""
    try:
        yield
    except LmtrainError as error:
        if debug_mode["on"]:
            raise
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
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
) -> None:
    """Train a language model as CONFIG says; checkpoints and TensorBoard logs go to its run_dir."""
    from lmtrain.config import load_config
    from lmtrain.trainer import TrainingInterrupted
    from lmtrain.trainer import train as run_training

    with user_errors():
        if resume and overwrite:
            raise ConfigError("--resume and --overwrite exclude each other; pick one")
        resolved = load_config(config, overrides or [])
        if quiet:
            resolved.log.quiet = True
        try:
            result = run_training(resolved, overwrite=overwrite, resume=resume, show_progress=progress)
        except TrainingInterrupted as stopped:
            again = " ".join(["lmtrain train", str(config), *(overrides or []), "--resume"])
            raise TrainingInterrupted(f"{stopped}; continue with: {again}") from None
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


@app.command()
def sample(
    checkpoint: Annotated[
        Path, typer.Argument(metavar="CHECKPOINT", help="A checkpoint written by `lmtrain train` (best.pt).")
    ],
    temperature: Annotated[
        float, typer.Option(help="Softmax temperature (> 0): below 1 is more conservative, above 1 wilder.")
    ] = 1.0,
    length: Annotated[int, typer.Option(help="Maximum number of tokens to generate.")] = 200,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same text.")] = 0,
    prime: Annotated[str, typer.Option(help="Text to condition on; printed before the continuation.")] = "",
    stop: Annotated[
        bool, typer.Option("--stop/--no-stop", help="Word models: stop at the first <eos>.")
    ] = True,
    device: Annotated[str, typer.Option(help="Device to run on: cpu, cuda, mps, or auto.")] = "cpu",
) -> None:
    """Generate text from a checkpoint alone."""
    from lmtrain.checkpoint import load_checkpoint, restore_model
    from lmtrain.devices import resolve_device
    from lmtrain.sampling import check_length, check_temperature, encode_prompt, generate

    with user_errors():
        check_temperature(temperature)
        check_length(length)
        if device not in ("cpu", "cuda", "mps", "auto"):
            raise ConfigError(f"--device must be cpu, cuda, mps or auto (got {device!r})")
        torch_device = resolve_device(device)
        model, tokenizer, _ = restore_model(load_checkpoint(checkpoint), torch_device)
        prompt_ids = encode_prompt(tokenizer, prime) if prime else []
        write = stream_writer()
        if prime:
            write(tokenizer.decode(prompt_ids).rstrip("\n"))
        ids = generate(model, tokenizer, length, temperature, prompt_ids, seed=seed, stop_at_eos=stop)
        at_line_start = not prime
        for token_id in ids:
            piece = tokenizer.decode_token(token_id, is_first=at_line_start)
            write(piece)
            at_line_start = piece.endswith("\n")
        if not at_line_start:
            write("\n")


data_app = typer.Typer(
    help="List the corpora known by name and download them into the cache.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(data_app, name="data")


@data_app.command("list")
def data_list() -> None:
    """List the named corpora, where they come from, and whether they are ready offline."""
    from lmtrain.datasets import DATASETS, cache_dir, data_mirror, is_available

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
    from lmtrain.datasets import cache_dir, data_mirror, fetch_dataset, get_dataset

    with user_errors():
        paths = fetch_dataset(get_dataset(name), cache_dir(), data_mirror())
        for split in ("train", "valid", "test"):
            path = getattr(paths, split)
            if path is not None:
                typer.echo(f"{split:<5} {path} ({path.stat().st_size:,} bytes)")


def stream_writer() -> Callable[[str], None]:
    """Write text to stdout as it is generated."""

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    return write


def main() -> None:
    """Entry point of the `lmtrain` console script."""
    app()
