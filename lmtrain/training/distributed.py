"""Data-parallel training: which process this is, and what the training processes agree on.

Under `torchrun` (or `lmtrain train --nproc N`, which runs torchrun's launcher) every process runs
the same training loop on its own block of the batch, and PyTorch's `DistributedDataParallel`
averages the gradients after every backward pass, so every process takes the same optimizer step.
The `batch_size` parallel streams of the training text (see `lmtrain.data.batching`) are split into
contiguous blocks, one per process (rank), and each rank carries the hidden state of its own streams:

    batch_size = 8, world_size = 2:      train_data [rows, 8]
                                         streams  0 1 2 3 | 4 5 6 7
                                         rank         0   |    1       each [rows, 4]

Each rank computes the mean loss of its `[T, B / world_size]` window; the blocks are equal, so the
average of the ranks' gradients is the gradient of the mean loss over all `B` streams, as in one
process with the whole batch. Only the order of floating-point sums differs, so losses and weights
match a single-process run to float tolerance (dropout and random initial states excepted: each
rank draws its own masks, from the seed `train.seed + rank`). Evaluation splits its streams the same
way (blocks may differ by one stream) and adds up the ranks' summed losses and token counts.

Rank 0 alone writes the run directory (lock, config.yaml, checkpoints, TensorBoard) and prints;
`on_main` runs such a step there and makes every rank raise the error it may have raised, so that
no rank waits forever for a rank that has failed. Everything every rank must agree on is decided
collectively: the logged loss (an all-reduced mean), whether to stop after a signal (an all-reduced
flag, so all ranks stop after the same step), and the checkpoint's carried state, which rank 0
gathers for all `B` streams so that `last.pt` is self-contained.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lmtrain.config import TrainConfig
from lmtrain.data.batching import State
from lmtrain.devices import resolve_device
from lmtrain.errors import ConfigError, LmtrainError, TrainingError

T = TypeVar("T")

LAUNCHER_VARIABLES = ("TORCHELASTIC_RUN_ID", "LOCAL_RANK", "WORLD_SIZE")
"""Environment variables torchrun sets in the processes it starts."""


@dataclass(frozen=True)
class DataParallel:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0, the process that writes the run directory and prints."""
        return self.rank == 0

    def block(self, streams: int) -> slice:
        """This rank's contiguous block of `streams` parallel streams (block sizes differ by at most one)."""
        return slice(streams * self.rank // self.world_size, streams * (self.rank + 1) // self.world_size)

    def seed(self, seed: int) -> None:
        """Give each rank its own dropout masks and random initial states, reproducibly: `seed + rank`.

        One process keeps the generators as they are, so a single-process run is unchanged.
        """
        if self.active:
            torch.manual_seed(seed + self.rank)

    def wrap(self, module: nn.Module, find_unused_parameters: bool = False) -> nn.Module:
        """`module` in DistributedDataParallel, which averages gradients across ranks after backward."""
        if not self.active:
            return module
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(
            module, device_ids=device_ids, find_unused_parameters=find_unused_parameters
        )

    # ----- collectives: every rank must call these together ------------------------------------------

    def mean(self, value: torch.Tensor) -> float:
        """The mean of a scalar over all ranks."""
        if not self.active:
            return float(value.detach())
        total = value.detach().to(self.device, torch.float64).reshape(1)
        dist.all_reduce(total)
        return float(total) / self.world_size

    def any(self, flag: bool) -> bool:
        """Whether `flag` is true on any rank."""
        if not self.active:
            return flag
        votes = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(votes, op=dist.ReduceOp.MAX)
        return bool(votes)

    def all(self, flag: bool) -> bool:
        """Whether `flag` is true on every rank."""
        return not self.any(not flag)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over all ranks, in float64."""
        if not self.active:
            return values
        totals = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(totals)
        return totals.tolist()

    def gather_state(self, state: State | None) -> State | None:
        """The carried state of all `B` streams, from each rank's block: per tensor `[B / W, H] -> [B, H]`.

        Every rank carries a state or none does (both follow the epoch and the collective decisions).
        """
        if not self.active or state is None:
            return state
        gathered = []
        for layer in state:
            tensors = []
            for tensor in layer:
                blocks = [torch.empty_like(tensor) for _ in range(self.world_size)]
                dist.all_gather(blocks, tensor.contiguous())
                tensors.append(torch.cat(blocks))  # rank order is stream order
            gathered.append(tuple(tensors))
        return gathered

    def gather_objects(self, value: Any) -> list[Any]:
        """`value` from every rank, in rank order (plain data such as random generators' states)."""
        if not self.active:
            return [value]
        values = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def broadcast(self, value: T) -> T:
        """Rank 0's `value`, on every rank."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, action: Callable[[], T]) -> T | None:
        """Run `action` on rank 0 only; its result there (None elsewhere). If it raises an LmtrainError,
        every rank raises it, so that no rank waits for a rank that has stopped."""
        result, error = None, None
        if self.is_main:
            try:
                result = action()
            except LmtrainError as raised:
                error = raised
        error = self.broadcast(error)
        if error is not None:
            raise self.together(error)
        return result

    def everywhere(self, action: Callable[[], T]) -> T:
        """Run `action` on every rank. If it raises an LmtrainError on any rank, every rank raises the
        error of the lowest such rank (named in the message unless it is rank 0), printed once."""
        result, error = None, None
        try:
            result = action()
        except LmtrainError as raised:
            error = raised
        failures = [(rank, failed) for rank, failed in enumerate(self.gather_objects(error)) if failed]
        if failures:
            rank, first = failures[0]
            raise self.together(first if rank == 0 else type(first)(f"rank {rank}: {first}"))
        return result

    def together(self, error: LmtrainError) -> LmtrainError:
        """Mark `error` as raised by every rank at once, so that the CLI prints it once, on rank 0."""
        if not self.is_main:
            error.reported_by_rank_0 = True
        return error

    def from_main(self, action: Callable[[], T]) -> T:
        """Run `action` on rank 0 only, and give its result to every rank (errors as in `on_main`)."""
        return self.broadcast(self.on_main(action))


class WindowLoss(nn.Module):
    """The language model's `language_model_loss` as `forward`.

    DistributedDataParallel prepares its gradient averaging in `forward`, so the loss must be
    computed through a module call; the model itself is unchanged (its `forward` returns logits).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self, inputs: torch.Tensor, targets: torch.Tensor, state: State
    ) -> tuple[torch.Tensor, State]:
        return self.model.language_model_loss(inputs, targets, state)


# ----- launching ------------------------------------------------------------------------------------


def launched_by_torchrun() -> bool:
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


def environment_rank() -> int:
    """This process's rank as the launcher set it (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0"))


def environment_world() -> tuple[int, int]:
    """`(world_size, local_world_size)` as the launcher set them (`(1, 1)` without a launcher)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world, int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))


def choose_backend(requested: str, device: torch.device) -> str:
    """`auto`: nccl on CUDA, gloo on the CPU; nccl needs CUDA."""
    if requested == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if requested == "nccl" and device.type != "cuda":
        raise ConfigError(
            f"train.backend=nccl needs CUDA GPUs, and this run is on {device.type}; use train.backend=gloo "
            "(or auto) for CPU processes"
        )
    return requested


def check_launch(train: TrainConfig, world_size: int, local_world_size: int | None = None) -> torch.device:
    """Refuse a data-parallel launch that cannot work, before any process waits for another.

    Returns the kind of device the processes will train on (`cuda` without an index, or `cpu`).
    """
    device = resolve_device(train.device)
    if device.type == "mps":
        raise ConfigError(
            "data-parallel training runs on CUDA GPUs (nccl) or CPUs (gloo), not Apple's MPS; use "
            "train.device=cpu"
        )
    choose_backend(train.backend, device)
    if train.batch_size % world_size:
        raise ConfigError(
            f"train.batch_size ({train.batch_size}) must be divisible by the number of processes "
            f"({world_size}): each process trains an equal block of the parallel streams; change "
            "train.batch_size or the process count"
        )
    local = world_size if local_world_size is None else local_world_size
    if device.type == "cuda" and local > torch.cuda.device_count():
        raise ConfigError(
            f"{local} processes on this machine but only {torch.cuda.device_count()} CUDA GPU(s); start at "
            "most one process per GPU"
        )
    return device


@contextmanager
def data_parallel(train: TrainConfig) -> Iterator[DataParallel]:
    """This process's `DataParallel`: one process, or a rank of the group torchrun launched.

    The process group is created from torchrun's environment (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`, ...)
    and destroyed at the end; a group the caller has already created is used as it is and left alone.
    """
    if dist.is_available() and dist.is_initialized():
        yield this_process(train, dist.get_rank(), dist.get_world_size())
        return
    world_size = environment_world()[0]
    if world_size <= 1:
        yield DataParallel(resolve_device(train.device))
        return
    parallel = this_process(train, environment_rank(), world_size)  # checked, on its GPU, before joining
    dist.init_process_group(choose_backend(train.backend, parallel.device))
    try:
        yield parallel
    finally:
        dist.destroy_process_group()


def this_process(train: TrainConfig, rank: int, world_size: int) -> DataParallel:
    """The `DataParallel` of rank `rank`, once the launch is checked; on CUDA each process uses the
    GPU of its local rank."""
    device = check_launch(train, world_size, environment_world()[1])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return DataParallel(device, rank, world_size, local_rank)


def run_local_processes(nproc: int, lmtrain_args: list[str]) -> int:
    """Run `python -m lmtrain LMTRAIN_ARGS` in `nproc` processes on this machine, as
    `torchrun --standalone --nproc-per-node NPROC -m lmtrain ...` would; the exit code to report.

    The workers print their own output and errors, so the launcher's log lines, which repeat them,
    are not shown; a worker killed by a signal is reported here. Ctrl-C reaches the workers through
    the launcher, which sends each one SIGINT.
    """
    # Imported here: the launcher pulls in the elastic agent, which plain training does not need.
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    arguments = get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={nproc}", "--module", "lmtrain", *lmtrain_args]
    )
    try:
        with launcher_logs_hidden():
            run(arguments)
    except ChildFailedError as failed:
        # A process that fails makes the launcher stop the others (SIGTERM): report the failure that
        # a process explained itself (an exit code), else the signal that killed one.
        codes = sorted((failure.exitcode, rank) for rank, failure in failed.failures.items())
        explained = [code for code, _ in codes if code > 0]
        if explained:
            return explained[0]
        number, rank = codes[0]
        raise TrainingError(
            f"training process {rank} was killed by {signal.Signals(-number).name}; the last checkpoint "
            "in run_dir is kept (resume with --resume)"
        ) from None
    except SignalException as stopped:
        return 128 + int(stopped.sigval)
    return 0


@contextmanager
def launcher_logs_hidden() -> Iterator[None]:
    """Silence the log lines of torchrun's launcher (`torch.distributed.run`, `...elastic`)."""
    loggers = [logging.getLogger(name) for name in ("torch.distributed.run", "torch.distributed.elastic")]
    hidden = logging.NullHandler()
    for logger in loggers:
        logger.propagate = False
        logger.addHandler(hidden)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(hidden)
            logger.propagate = True
