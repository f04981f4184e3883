"""The checkpoint format: the only module that knows how a checkpoint file is laid out.

A checkpoint is one `torch.save`d dict of plain data and tensors, so that it loads with
`torch.load(..., weights_only=True)`: a stranger's file can never run code on load.

    format            "lmtrain-checkpoint"
    format_version    FORMAT_VERSION (files from a newer lmtrain are refused with a clear message)
    lmtrain_version   the version that wrote it
    config            the resolved run config (a dict)
    tokenizer         the vocabulary (tokenizer.to_dict())
    model             the model's state_dict (tensors moved to the CPU)
    optimizer         the optimizer's state_dict
    progress          {step, epoch, position (row where the next window starts), window (windows
                      done this epoch), skipped_batches, best_valid_loss, valid_loss, world_size
                      (the number of data-parallel processes that trained it; 1 when absent)}
    schedule          the learning-rate schedule's state (plateau's reductions and best loss)
    carried_state     the hidden state carried between windows (list of per-layer lists of tensors,
                      each [batch_size, H]: every stream's, gathered from all processes)
    rng               torch CPU (and CUDA) generator states, Python's random state, and the
                      window-length generator's state (`windows`); with several processes also
                      `ranks`, each process's own generator states in rank order

Version 1 (lmtrain 0.1.0) had `train.clip_norm` and counted windows instead of rows; `load_checkpoint`
upgrades such files as it reads them, so old checkpoints sample and resume.

Files are written atomically: to a temporary file in the same directory, flushed to disk, then
renamed over the old file, so a crash at any moment leaves either the old or the new checkpoint.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from lmtrain import __version__
from lmtrain.config import Config, config_from_dict
from lmtrain.data.tokenizer import Tokenizer, tokenizer_from_dict
from lmtrain.errors import CheckpointError, ConfigError
from lmtrain.model.language_model import RNNLanguageModel

FORMAT = "lmtrain-checkpoint"
FORMAT_VERSION = 2


def to_cpu(value: Any) -> Any:
    """The same nested structure with every tensor on the CPU (checkpoints load anywhere)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: to_cpu(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(to_cpu(item) for item in value)
    return value


def make_checkpoint(
    config: Config,
    tokenizer: Tokenizer,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    progress: dict[str, Any],
    carried_state: list[tuple[torch.Tensor, ...]] | None = None,
    rng: dict[str, Any] | None = None,
    schedule: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint dict of a training run, every tensor on the CPU."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "lmtrain_version": __version__,
        "config": config.model_dump(mode="json"),
        "tokenizer": tokenizer.to_dict(),
        "model": to_cpu(model.state_dict()),
        "optimizer": to_cpu(optimizer.state_dict()) if optimizer is not None else None,
        "progress": dict(progress),
        "schedule": dict(schedule) if schedule is not None else None,
        "carried_state": [list(to_cpu(layer)) for layer in carried_state] if carried_state else None,
        "rng": to_cpu(rng) if rng else {},
    }


def save_checkpoint(checkpoint: dict[str, Any], path: Path) -> None:
    """Write `checkpoint` to `path` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise CheckpointError(
                f"could not write checkpoint {path}: {error.strerror or error}; the previous checkpoint "
                "is unchanged; free disk space or choose another run_dir"
            ) from None
        raise


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint file; every problem becomes one clear CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; pass a .pt file written by `lmtrain train`")
    if path.is_dir():
        hint = " (e.g. best.pt in it)" if (path / "best.pt").exists() else ""
        raise CheckpointError(f"checkpoint {path} is a directory; pass a .pt file{hint}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); use another checkpoint of the run")
    if not zipfile.is_zipfile(path):
        # Every torch.save since PyTorch 1.6 writes a zip archive; anything else is not ours.
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt and cannot be read; use another checkpoint of the "
            "run (last.pt or best.pt), or a .pt file written by `lmtrain train`"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"checkpoint {path} was refused: it contains objects other than plain data and tensors "
            "(loading it could run code); it was not written by lmtrain"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError, IndexError):
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt and cannot be read; use another checkpoint "
            "of the run (last.pt or best.pt)"
        ) from None
    check_format(checkpoint, path)
    return upgrade(checkpoint)


def check_format(checkpoint: Any, path: Path) -> None:
    """Refuse anything that is not an lmtrain checkpoint of a format this version can read."""
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an lmtrain checkpoint (it holds no lmtrain format marker)")
    version = checkpoint.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version}, newer than this lmtrain reads "
            f"({FORMAT_VERSION}); upgrade lmtrain (pip install -U lmtrain)"
        )
    missing = [key for key in ("config", "tokenizer", "model") if key not in checkpoint]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")


def upgrade(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint in the current format, from any older version this lmtrain reads."""
    if checkpoint["format_version"] < 2:
        train = checkpoint["config"].get("train", {})
        if "clip_norm" in train:
            train["clip"] = {"max_norm": train.pop("clip_norm")}
        progress = checkpoint.get("progress") or {}
        if "window" in progress and "position" not in progress:
            progress["position"] = progress["window"] * train.get("bptt", 35)
        checkpoint["format_version"] = 2
    return checkpoint


def restore_config(checkpoint: dict[str, Any]) -> Config:
    try:
        return config_from_dict(checkpoint["config"], source="the checkpoint's config")
    except ConfigError as error:
        raise CheckpointError(str(error)) from None


def restore_model(
    checkpoint: dict[str, Any], device: torch.device | str = "cpu"
) -> tuple[RNNLanguageModel, Tokenizer, Config]:
    """The trained model (in eval mode, on `device`), its tokenizer and its config."""
    config = restore_config(checkpoint)
    tokenizer = tokenizer_from_dict(checkpoint["tokenizer"])
    model = RNNLanguageModel(tokenizer.vocab_size, config.model)
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, KeyError, TypeError) as error:
        first_line = str(error).strip().splitlines()[0]
        raise CheckpointError(f"the checkpoint's weights do not fit its model config: {first_line}") from None
    return model.to(device).eval(), tokenizer, config
