"""Every bad input gets one clear line, the right exit code and no traceback (issue: bad input and faults).

Each row of the tables below is run through the real CLI with typer's CliRunner; a few also run in a
real subprocess. Exit code 2 means a usage or config mistake, 1 a failure at run time.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from lmtrain.cli import app

from helpers import tiny_config_dict

runner = CliRunner()


@dataclass
class Case:
    """A command line built from a tmp folder, and what its one error line must say."""

    name: str
    build: object  # (folder: Path, corpus: Path, checkpoint: Path) -> list[str]
    exit_code: int
    fragments: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)  # extra environment variables


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def config_file(folder: Path, corpus: Path, **sections) -> Path:
    return write(folder / "config.yaml", yaml.safe_dump(tiny_config_dict(corpus, folder / "run", **sections)))


def data_config(folder: Path, corpus: Path, **data) -> Path:
    """A config whose data section points at files made for the case."""
    config = tiny_config_dict(corpus, folder / "run")
    config["data"].update(
        {key: str(value) if isinstance(value, Path) else value for key, value in data.items()}
    )
    return write(folder / "config.yaml", yaml.safe_dump(config))


class Evil:
    """Unpickling this would run code: it must never happen."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def malicious_checkpoint(folder: Path) -> Path:
    path = folder / "evil.pt"
    torch.save({"format": "lmtrain-checkpoint", "payload": Evil(folder / "pwned")}, path)
    return path


def truncated_checkpoint(folder: Path, checkpoint: Path) -> Path:
    data = checkpoint.read_bytes()
    return write(folder / "truncated.pt", data[: len(data) // 2])


def newer_checkpoint(folder: Path, checkpoint: Path) -> Path:
    content = torch.load(checkpoint, weights_only=True)
    content["format_version"] = 999
    torch.save(content, folder / "newer.pt")
    return folder / "newer.pt"


def tensor_file(folder: Path) -> Path:
    torch.save(torch.zeros(3), folder / "tensor.pt")
    return folder / "tensor.pt"


def foreign_checkpoint(folder: Path) -> Path:
    torch.save({"state_dict": {"weight": torch.zeros(2)}, "epoch": 3}, folder / "other.pt")
    return folder / "other.pt"


CONFIG_CASES = [
    Case("config missing", lambda f, c, k: ["train", f / "nope.yaml"], 2, ("nope.yaml does not exist",)),
    Case(
        "config not yaml",
        lambda f, c, k: ["train", write(f / "x.yaml", "a: [1, 2\n")],
        2,
        ("not valid YAML",),
    ),
    Case("config empty", lambda f, c, k: ["train", write(f / "x.yaml", "")], 2, ("is empty",)),
    Case("config a list", lambda f, c, k: ["train", write(f / "x.yaml", "- 1\n- 2\n")], 2, ("holds a list",)),
    Case(
        "unknown key",
        lambda f, c, k: ["train", config_file(f, c, model={"hiden_size": 3})],
        2,
        ("unknown key 'hiden_size'", "did you mean 'hidden_size'"),
    ),
    Case(
        "wrong type",
        lambda f, c, k: ["train", config_file(f, c, model={"hidden_size": "big"})],
        2,
        ("model.hidden_size", "'big'"),
    ),
    Case("negative lr", lambda f, c, k: ["train", config_file(f, c), "train.lr=-1"], 2, ("train.lr",)),
    Case(
        "zero hidden size",
        lambda f, c, k: ["train", config_file(f, c), "model.hidden_size=0"],
        2,
        ("hidden_size",),
    ),
    Case(
        "dropout 1", lambda f, c, k: ["train", config_file(f, c), "model.dropout=1.0"], 2, ("model.dropout",)
    ),
    Case("bptt 0", lambda f, c, k: ["train", config_file(f, c), "train.bptt=0"], 2, ("train.bptt",)),
    Case(
        "native impl of a cell torch lacks",
        lambda f, c, k: ["train", config_file(f, c), "model.cell=esn", "model.impl=native"],
        2,
        ("model.impl 'native'", "echo state network", "model.impl 'auto'"),
    ),
    Case(
        "all problems at once",
        lambda f, c, k: ["train", config_file(f, c), "train.lr=-1", "train.bptt=0", "model.dropout=2"],
        2,
        ("3 problem(s)", "train.lr", "train.bptt", "model.dropout"),
    ),
    Case(
        "mutually exclusive",
        lambda f, c, k: ["train", config_file(f, c), "data.dataset=agreement"],
        2,
        ("give one of data.dataset, data.train/data.valid paths, or data.file",),
    ),
    Case(
        "override names no key",
        lambda f, c, k: ["train", config_file(f, c), "train.lrn=0.1"],
        2,
        ("unknown key 'lrn'", "did you mean 'lr'"),
    ),
    Case(
        "override does not parse",
        lambda f, c, k: ["train", config_file(f, c), "train.lr=[0.1"],
        2,
        ("cannot parse",),
    ),
    Case(
        "override without =",
        lambda f, c, k: ["train", config_file(f, c), "train.lr"],
        2,
        ("section.key=value",),
    ),
    Case(
        "resume and overwrite",
        lambda f, c, k: ["train", config_file(f, c), "--resume", "--overwrite"],
        2,
        ("exclude each other",),
    ),
]

DATA_CASES = [
    Case(
        "train file missing",
        lambda f, c, k: ["train", data_config(f, c, train=f / "missing.txt")],
        1,
        ("missing.txt does not exist",),
    ),
    Case(
        "train file empty",
        lambda f, c, k: ["train", data_config(f, c, train=write(f / "empty.txt", "\n\n"))],
        1,
        ("empty.txt is empty",),
    ),
    Case(
        "train is a directory",
        lambda f, c, k: ["train", data_config(f, c, train=f)],
        1,
        ("is a directory",),
    ),
    Case(
        "undecodable bytes",
        lambda f, c, k: [
            "train",
            data_config(f, c, train=write(f / "latin1.txt", b"caf\xe9 au lait\n" * 50)),
        ],
        1,
        ("not UTF-8", "byte offset 3"),
    ),
    Case(
        "corpus too short",
        lambda f, c, k: ["train", data_config(f, c, train=write(f / "short.txt", "a b c\n"))],
        1,
        ("fewer than one batch of windows needs", "= 44"),
    ),
    Case(
        "char outside vocabulary",
        lambda f, c, k: [
            "train",
            data_config(
                f, c, tokenizer="char", valid=write(f / "valid.txt", "the cat sat on the mat Ω\n" * 9)
            ),
        ],
        1,
        ("valid.txt", "'Ω'"),
    ),
    Case(
        "empty vocabulary after min_freq",
        lambda f, c, k: ["train", data_config(f, c, min_freq=1_000_000)],
        1,
        ("word vocabulary is empty", "min_freq"),
    ),
    Case(
        "unknown dataset",
        lambda f, c, k: [
            "train",
            config_file(f, c),
            "data.train=null",
            "data.valid=null",
            "data.dataset=nope",
        ],
        2,
        ("data.dataset: unknown dataset 'nope'", "agreement"),
    ),
]

CHECKPOINT_CASES = [
    Case("checkpoint missing", lambda f, c, k: ["sample", f / "nope.pt"], 1, ("does not exist",)),
    Case("checkpoint is a directory", lambda f, c, k: ["sample", f], 1, ("is a directory",)),
    Case(
        "checkpoint empty", lambda f, c, k: ["sample", write(f / "zero.pt", b"")], 1, ("is empty (0 bytes)",)
    ),
    Case(
        "checkpoint truncated",
        lambda f, c, k: ["sample", truncated_checkpoint(f, k)],
        1,
        ("truncated or corrupt",),
    ),
    Case(
        "random bytes",
        lambda f, c, k: ["sample", write(f / "random.pt", bytes(range(256)) * 8)],
        1,
        ("truncated or corrupt",),
    ),
    Case("a plain tensor", lambda f, c, k: ["sample", tensor_file(f)], 1, ("not an lmtrain checkpoint",)),
    Case(
        "another tool's checkpoint", lambda f, c, k: ["sample", foreign_checkpoint(f)], 1, ("not an lmtrain",)
    ),
    Case(
        "newer format",
        lambda f, c, k: ["sample", newer_checkpoint(f, k)],
        1,
        ("format version 999", "upgrade"),
    ),
    Case("malicious pickle", lambda f, c, k: ["sample", malicious_checkpoint(f)], 1, ("refused", "run code")),
]

SAMPLING_CASES = [
    Case("temperature 0", lambda f, c, k: ["sample", k, "--temperature", "0"], 2, ("--temperature",)),
    Case("temperature negative", lambda f, c, k: ["sample", k, "--temperature", "-2"], 2, ("--temperature",)),
    Case("temperature nan", lambda f, c, k: ["sample", k, "--temperature", "nan"], 2, ("--temperature",)),
    Case("length 0", lambda f, c, k: ["sample", k, "--length", "0"], 2, ("--length must be at least 1",)),
    Case("top-k 0", lambda f, c, k: ["sample", k, "--top-k", "0"], 2, ("--top-k must be between 1 and",)),
    Case(
        "top-k above vocab", lambda f, c, k: ["sample", k, "--top-k", "99999"], 2, ("--top-k", "(got 99999)")
    ),
    Case("top-p 0", lambda f, c, k: ["sample", k, "--top-p", "0"], 2, ("--top-p must be in (0, 1]",)),
    Case("top-p above 1", lambda f, c, k: ["sample", k, "--top-p", "1.5"], 2, ("--top-p must be in (0, 1]",)),
    Case("empty prompt for score", lambda f, c, k: ["score", k, ""], 2, ("the input is empty",)),
    Case("nothing to score", lambda f, c, k: ["score", k], 2, ("nothing to score",)),
    Case(
        "prompt with unknown words",
        lambda f, c, k: ["sample", k, "--prime", "the unicorn"],
        2,
        ("'unicorn'", "outside the model's vocabulary"),
    ),
]


def char_checkpoint(folder: Path, corpus: Path) -> Path:
    """A character model trained for one step."""
    config = config_file(folder, corpus, data={"tokenizer": "char"}, train={"max_steps": 1})
    result = runner.invoke(app, ["train", str(config), "--no-progress"])
    assert result.exit_code == 0, result.output
    return folder / "run" / "best.pt"


def checkpoint_without_is(folder: Path, corpus: Path) -> Path:
    """A word model trained for one step on text without the word "is", which the probe needs."""
    lines = (corpus / "train.txt").read_text(encoding="utf-8").splitlines()
    train = write(folder / "no-is.txt", "".join(line + "\n" for line in lines if "is" not in line.split()))
    config = data_config(folder, corpus, train=train)
    result = runner.invoke(app, ["train", str(config), "train.max_steps=1", "--no-progress"])
    assert result.exit_code == 0, result.output
    return folder / "run" / "best.pt"


PROBE_CASES = [
    Case(
        "probe a character checkpoint",
        lambda f, c, k: ["probe", char_checkpoint(f, c)],
        2,
        ("needs a word-level checkpoint", "character model"),
    ),
    Case("probe checkpoint missing", lambda f, c, k: ["probe", f / "nope.pt"], 1, ("does not exist",)),
    Case(
        "probe distances not numbers",
        lambda f, c, k: ["probe", k, "--distances", "0,two"],
        2,
        ("--distances must be comma-separated whole numbers", "'0,two'"),
    ),
    Case(
        "probe negative distance",
        lambda f, c, k: ["probe", k, "--distances", "2,-4"],
        2,
        ("--distances must be 0 or more (got -4)",),
    ),
    Case("probe no pairs", lambda f, c, k: ["probe", k, "--pairs-per-distance", "0"], 2, ("at least 1",)),
    Case(
        "probe more pairs than exist",
        lambda f, c, k: ["probe", k, "--distances", "0", "--pairs-per-distance", "5000"],
        2,
        ("distance 0 has fewer than 5000 distinct pairs",),
    ),
    Case(
        "probe words outside the vocabulary",
        lambda f, c, k: ["probe", checkpoint_without_is(f, c), "--distances", "0,2"],
        2,
        ("not all in the model's vocabulary: 'is'", "--unknown skip"),
    ),
    Case(
        "probe unknown mode",
        lambda f, c, k: ["probe", k, "--unknown", "map"],
        2,
        ("--unknown must be error or skip",),
    ),
    Case(
        "probe plot not writable",
        lambda f, c, k: [
            "probe",
            k,
            "--distances",
            "0",
            "--pairs-per-distance",
            "5",
            "--unknown",
            "skip",
            "--plot",
            f / "missing" / "plot.png",
        ],
        2,
        ("cannot write --plot", "No such file or directory"),
    ),  # fmt: skip
]


def run_dir_with_run(folder: Path, corpus: Path) -> Path:
    config = config_file(folder, corpus)
    write(folder / "run" / "last.pt", b"earlier run")
    return config


def run_dir_locked(folder: Path, corpus: Path) -> Path:
    config = config_file(folder, corpus)
    write(folder / "run" / ".lock", str(os.getppid()))  # a live process: the test runner's parent
    return config


RUN_DIR_CASES = [
    Case(
        "a run already there",
        lambda f, c, k: ["train", run_dir_with_run(f, c)],
        2,
        ("already holds a run", "--resume", "--overwrite"),
    ),
    Case(
        "run dir locked by another training",
        lambda f, c, k: ["train", run_dir_locked(f, c), "--overwrite"],
        2,
        ("in use by another training",),
    ),
    Case(
        "run dir is a file",
        lambda f, c, k: ["train", config_file(f, c), f"run_dir={write(f / 'file', 'x')}"],
        2,
        ("is a file",),
    ),
    Case(
        "run dir not writable",
        lambda f, c, k: ["train", config_file(f, c), f"run_dir={write(f / 'file', 'x') / 'run'}"],
        2,
        ("is not writable",),
    ),
    Case(
        "resume with nothing to resume",
        lambda f, c, k: ["train", config_file(f, c), "--resume"],
        2,
        ("nothing to resume",),
    ),
]

TORCHRUN_ENVIRONMENT = {"TORCHELASTIC_RUN_ID": "job", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}

LAUNCH_CASES = [
    Case(
        "batch size not divisible by --nproc",
        lambda f, c, k: ["train", config_file(f, c), "--nproc", "3"],
        2,
        ("train.batch_size (4) must be divisible by the number of processes (3)",),
    ),
    Case(
        "nccl without CUDA",
        lambda f, c, k: ["train", config_file(f, c), "train.backend=nccl", "--nproc", "2"],
        2,
        ("train.backend=nccl needs CUDA GPUs", "train.backend=gloo"),
    ),
    Case("--nproc 0", lambda f, c, k: ["train", config_file(f, c), "--nproc", "0"], 2, ("--nproc must be",)),
    Case(
        "--nproc under torchrun",
        lambda f, c, k: ["train", config_file(f, c), "--nproc", "2"],
        2,
        ("already is one of 2 started by torchrun", "drop --nproc"),
        env=TORCHRUN_ENVIRONMENT,
    ),
]

ALL_CASES = (
    CONFIG_CASES + DATA_CASES + CHECKPOINT_CASES + SAMPLING_CASES + PROBE_CASES + RUN_DIR_CASES + LAUNCH_CASES
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_corpus) -> Path:
    folder = tmp_path_factory.mktemp("trained")
    config = config_file(folder, tiny_corpus, train={"max_steps": 2})
    result = runner.invoke(app, ["train", str(config), "--no-progress"])
    assert result.exit_code == 0, result.output
    return folder / "run" / "best.pt"


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda case: case.name)
def test_bad_input_is_one_clear_line(case, tmp_path, tiny_corpus, checkpoint):
    args = [str(arg) for arg in case.build(tmp_path, tiny_corpus, checkpoint)]
    result = runner.invoke(app, args, env=case.env)
    assert result.exit_code == case.exit_code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in case.fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "pwned").exists()


SUBPROCESS_CASES = [
    "config missing",
    "unknown key",
    "undecodable bytes",
    "malicious pickle",
    "temperature nan",
    "batch size not divisible by --nproc",
]


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_bad_input_in_a_real_process(name, tmp_path, tiny_corpus, checkpoint):
    case = next(case for case in ALL_CASES if case.name == name)
    args = [str(arg) for arg in case.build(tmp_path, tiny_corpus, checkpoint)]
    process = subprocess.run(
        [sys.executable, "-m", "lmtrain", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **case.env},
    )
    assert process.returncode == case.exit_code, process.stderr
    assert process.stderr.count("\n") == 1 and process.stderr.startswith("error: ")
    assert "Traceback" not in process.stderr
    assert not (tmp_path / "pwned").exists()


def test_debug_environment_variable_shows_the_traceback(tmp_path):
    process = subprocess.run(
        [sys.executable, "-m", "lmtrain", "sample", str(tmp_path / "nope.pt")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LMTRAIN_DEBUG": "1"},
    )
    assert process.returncode != 0
    assert "Traceback" in process.stderr and "CheckpointError" in process.stderr


def test_pickle_payload_would_have_run(tmp_path):
    """The malicious file above is real: loading it unsafely runs its code."""
    path = malicious_checkpoint(tmp_path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    torch.load(path, weights_only=False)
    assert (tmp_path / "pwned").exists()


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, tiny_corpus, monkeypatch):
    config = config_file(tmp_path, tiny_corpus, train={"max_steps": 20, "eval_interval": 10})
    assert runner.invoke(app, ["train", str(config), "train.max_steps=10", "--no-progress"]).exit_code == 0
    last = tmp_path / "run" / "last.pt"
    before = last.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("lmtrain.checkpoint.torch.save", disk_full)
    result = runner.invoke(app, ["train", str(config), "--resume", "--no-progress"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"error: could not write checkpoint {last}: No space left on device; the previous checkpoint is "
        "unchanged; free disk space or choose another run_dir"
    ]
    assert last.read_bytes() == before
    assert [p.name for p in last.parent.iterdir() if p.name.endswith(".tmp")] == []
