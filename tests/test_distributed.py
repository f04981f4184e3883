"""Data-parallel training (issue 7): two CPU processes with gloo train what one process trains.

The training runs fork two processes with `torch.multiprocessing` that join one gloo group on
localhost; `lmtrain.training.trainer.train` then uses that group. One test runs the real command line,
`lmtrain train --nproc 2`, which starts the processes through torchrun's launcher.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lmtrain.checkpoint import load_checkpoint, restore_model
from lmtrain.config import config_from_dict
from lmtrain.errors import ConfigError, DataError, LmtrainError
from lmtrain.generation.sampling import sample_text
from lmtrain.training.distributed import DataParallel, check_launch, data_parallel
from lmtrain.training.trainer import train

from helpers import RecordingLogger, run_training, tiny_config_dict

STEPS = 6


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def train_in_group(
    rank: int, world_size: int, port: int, jobs: list[tuple[dict, bool]], results: str
) -> None:
    """One rank: join the gloo group and train every `(config, resume)` job in turn, recording each
    one's train/loss curve, or the error it raised and whether the CLI would leave it to rank 0.
    Last, an action that fails on rank 1 alone, run by `DataParallel.everywhere`."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    outcomes = []

    def record(error: LmtrainError) -> None:
        outcomes.append([type(error).__name__, str(error), getattr(error, "reported_by_rank_0", False)])

    try:
        for config, resume in jobs:
            logger = RecordingLogger()
            try:
                train(config_from_dict(config), resume=resume, show_progress=False, logger=logger)
            except LmtrainError as error:
                record(error)
            else:
                outcomes.append(logger.losses())
        try:
            DataParallel(torch.device("cpu"), rank, world_size).everywhere(lambda: fail_on_rank(1))
        except LmtrainError as error:
            record(error)
    finally:
        dist.destroy_process_group()
    Path(f"{results}.{rank}").write_text(json.dumps(outcomes))


def fail_on_rank(failing: int) -> None:
    if dist.get_rank() == failing:
        raise DataError("the training text is missing on this machine")


def run_in_two_processes(jobs: list[tuple[dict, bool]], folder: Path) -> tuple[list, list]:
    """What every job gave on rank 0 and on rank 1, run by two processes that split the batch."""
    results = folder / "outcomes.json"
    # Forked, not spawned: the children need not import torch again (the parent has no process group).
    mp.start_processes(
        train_in_group, args=(2, free_port(), jobs, str(results)), nprocs=2, start_method="fork"
    )
    return tuple(json.loads(Path(f"{results}.{rank}").read_text()) for rank in range(2))


@pytest.fixture(scope="module")
def two_process_runs(tiny_corpus, tmp_path_factory):
    """2-process runs in one pair of processes: without dropout; with dropout, whole and stopped and
    resumed; and a start refused by rank 0 (its run_dir already holds a run)."""
    folder = tmp_path_factory.mktemp("distributed")
    no_dropout = tiny_config_dict(
        tiny_corpus, folder / "two", model={"dropout": 0.0}, train={"max_steps": STEPS, "eval_interval": 3}
    )
    whole = tiny_config_dict(tiny_corpus, folder / "whole", train={"max_steps": STEPS, "eval_interval": 3})
    split = tiny_config_dict(tiny_corpus, folder / "split", train={"max_steps": 4, "eval_interval": 3})
    resumed = tiny_config_dict(tiny_corpus, folder / "split", train={"max_steps": STEPS, "eval_interval": 3})
    jobs = [(no_dropout, False), (whole, False), (split, False), (resumed, True), (whole, False)]
    on_rank_0, on_rank_1 = run_in_two_processes(jobs, folder)
    assert on_rank_1[:4] == [[]] * 4  # rank 0 alone logs
    return folder, no_dropout, on_rank_0, on_rank_1


def test_two_processes_train_what_one_process_trains(two_process_runs, tmp_path):
    folder, config, losses, _ = two_process_runs
    one = {**config, "run_dir": str(tmp_path / "one")}
    _, logger = run_training(one)
    assert losses[0] == pytest.approx(logger.losses(), rel=1e-5, abs=1e-6)
    assert len(losses[0]) == STEPS
    two_weights = load_checkpoint(folder / "two" / "last.pt")["model"]
    one_weights = load_checkpoint(tmp_path / "one" / "last.pt")["model"]
    # Adam divides by the root of the squared gradients, so float rounding of the two sums (two halves
    # all-reduced, or one whole) moves a weight by up to ~1e-5 in 6 steps; a wrong split (gradients
    # summed instead of averaged, streams read twice) moves it by ~lr = 1e-2.
    for name, tensor in one_weights.items():
        torch.testing.assert_close(two_weights[name], tensor, rtol=1e-4, atol=1e-4, msg=name)
    two_last = load_checkpoint(folder / "two" / "last.pt")
    one_last = load_checkpoint(tmp_path / "one" / "last.pt")
    assert two_last["progress"]["valid_loss"] == pytest.approx(one_last["progress"]["valid_loss"], rel=1e-5)


def test_two_processes_write_one_self_contained_checkpoint(two_process_runs):
    folder, config, _, _ = two_process_runs
    run_dir = folder / "two"
    assert sorted(path.name for path in run_dir.iterdir()) == ["best.pt", "config.yaml", "last.pt"]
    checkpoint = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    assert checkpoint["progress"]["world_size"] == 2 and checkpoint["progress"]["step"] == STEPS
    batch_size, hidden = config["train"]["batch_size"], config["model"]["hidden_size"]
    for layer in checkpoint["carried_state"]:  # every stream's state, gathered from both ranks
        assert all(tensor.shape == (batch_size, hidden) for tensor in layer)
    ranks = checkpoint["rng"]["ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["torch"], ranks[1]["torch"])
    model, tokenizer, _ = restore_model(load_checkpoint(run_dir / "best.pt"))  # samples like any other
    assert sample_text(model, tokenizer, 5, seed=1)


def test_resumed_two_process_run_reproduces_the_uninterrupted_one(two_process_runs):
    folder, _, losses, _ = two_process_runs
    _, whole, first, second = losses[:4]
    assert first + second == whole  # dropout on: each rank's generators resume too
    whole_last = load_checkpoint(folder / "whole" / "last.pt")
    split_last = load_checkpoint(folder / "split" / "last.pt")
    for name, tensor in whole_last["model"].items():
        assert torch.equal(tensor, split_last["model"][name]), name


def test_an_error_on_rank_0_stops_every_rank_and_is_printed_once(two_process_runs):
    _, _, on_rank_0, on_rank_1 = two_process_runs
    (name, _, printed), (same_name, _, silent) = on_rank_0[-2], on_rank_1[-2]
    assert name == same_name == "RunDirectoryError"
    assert not printed and silent  # both ranks raise it; rank 0 prints it


def test_an_error_on_another_rank_stops_every_rank_and_is_printed_once_by_rank_0(two_process_runs):
    _, _, on_rank_0, on_rank_1 = two_process_runs
    message = "rank 1: the training text is missing on this machine"
    assert on_rank_0[-1] == ["DataError", message, False]
    assert on_rank_1[-1] == ["DataError", message, True]


def test_resuming_with_another_number_of_processes_is_refused(two_process_runs, tiny_corpus):
    folder, _, _, _ = two_process_runs
    config = tiny_config_dict(tiny_corpus, folder / "whole", train={"max_steps": STEPS + 2})
    with pytest.raises(
        ConfigError, match=r"written by 2 processes and this run has 1 process; resume with 2"
    ):
        run_training(config, resume=True)


# ----- the pieces, without processes -------------------------------------------------------------------


def test_blocks_of_streams_cover_the_batch_in_rank_order():
    cpu = torch.device("cpu")
    blocks = [DataParallel(cpu, rank, 4).block(10) for rank in range(4)]
    assert [(block.start, block.stop) for block in blocks] == [(0, 2), (2, 5), (5, 7), (7, 10)]
    assert DataParallel(cpu).block(10) == slice(0, 10)


@pytest.mark.parametrize(
    ("train", "world_size", "message"),
    [
        ({"batch_size": 6}, 4, r"train.batch_size \(6\) must be divisible by the number of processes \(4\)"),
        (
            {"backend": "nccl", "device": "cpu"},
            2,
            "train.backend=nccl needs CUDA GPUs, and this run is on cpu",
        ),
    ],
)
def test_launches_that_cannot_work_are_refused(tiny_corpus, tmp_path, train, world_size, message):
    config = config_from_dict(tiny_config_dict(tiny_corpus, tmp_path / "run", train=train))
    with pytest.raises(ConfigError, match=message):
        check_launch(config.train, world_size)


def test_torchrun_environment_is_checked_before_joining_the_group(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "1")
    config = config_from_dict(tiny_config_dict(tiny_corpus, tmp_path / "run", train={"batch_size": 6}))
    with pytest.raises(ConfigError, match="must be divisible"):
        with data_parallel(config.train):
            pass
    assert not dist.is_initialized()


# ----- the real command line ----------------------------------------------------------------------------


def lmtrain_process(*args, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lmtrain", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def test_ctrl_c_under_nproc_2_saves_one_good_last_checkpoint(tiny_config_file, tmp_path):
    config = tiny_config_file(train={"max_steps": 100_000, "eval_interval": 3}, log={"tensorboard": True})
    process = lmtrain_process("train", config, "--nproc", "2", "--no-progress", start_new_session=True)
    run_dir = tmp_path / "run"
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "last.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (run_dir / "last.pt").exists(), "training never wrote last.pt"
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr
    # Rank 0 alone prints, writes checkpoints and TensorBoard; the one error line says how to go on.
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: training stopped by a signal at step"), stderr
    assert lines[0].endswith("--resume --nproc 2")
    evaluations = [line for line in stdout.splitlines() if "| valid loss" in line]
    assert evaluations and len(set(evaluations)) == len(evaluations)
    assert sorted(path.name for path in run_dir.glob("*.pt")) == ["best.pt", "last.pt"]
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert not (run_dir / ".lock").exists()
    checkpoint = torch.load(run_dir / "last.pt", weights_only=True)
    assert checkpoint["progress"]["world_size"] == 2 and checkpoint["progress"]["step"] >= 3
