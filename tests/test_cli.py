"""The command line, through typer's CliRunner and through real subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from helpers import assert_one_line_error, invoke, tiny_config_dict


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory, tiny_corpus) -> Path:
    """best.pt of a tiny word model trained through the CLI."""
    folder = tmp_path_factory.mktemp("cli-run")
    config = folder / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(tiny_corpus, folder / "run")))
    result = invoke("train", config, "--no-progress")
    assert result.exit_code == 0, result.output
    return folder / "run" / "best.pt"


def test_help_lists_every_option_with_defaults():
    top = invoke("--help")
    assert top.exit_code == 0 and "train" in top.output and "sample" in top.output
    train_help = invoke("train", "--help").output
    for option in ("CONFIG", "KEY=VALUE", "--resume", "--overwrite", "--progress", "--quiet"):
        assert option in train_help
    sample_help = invoke("sample", "--help").output
    for option in ("--temperature", "--length", "--seed", "--prime", "--stop", "--device"):
        assert option in sample_help
    assert "default: 1.0" in sample_help and "default: 200" in sample_help


def test_train_prints_summary_and_writes_run(tiny_config_file, tmp_path):
    config = tiny_config_file(train={"max_steps": 10})
    result = invoke("train", config, "train.eval_interval=5", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "done: 10 steps" in result.output
    assert "unigram baseline" in result.output
    assert "lmtrain sample" in result.output
    run = tmp_path / "run"
    assert (run / "best.pt").exists() and (run / "last.pt").exists()
    assert "eval_interval: 5" in (run / "config.yaml").read_text()


def test_quiet_prints_only_the_summary(tiny_config_file, tmp_path):
    result = invoke("train", tiny_config_file(train={"max_steps": 4, "eval_interval": 2}), "--quiet")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("done: 4 steps") and "valid loss" not in result.output
    assert "quiet: true" in (tmp_path / "run" / "config.yaml").read_text()


def test_train_refuses_an_existing_run_and_overwrites_on_request(tiny_config_file):
    config = tiny_config_file(train={"max_steps": 2})
    assert invoke("train", config, "--no-progress").exit_code == 0
    assert_one_line_error(invoke("train", config, "--no-progress"), 2, "already holds a run", "--overwrite")
    assert invoke("train", config, "--overwrite", "--no-progress").exit_code == 0


def test_sample_is_reproducible_by_seed(trained_checkpoint):
    first = invoke("sample", trained_checkpoint, "--seed", "3", "--length", "30", "--no-stop")
    again = invoke("sample", trained_checkpoint, "--seed", "3", "--length", "30", "--no-stop")
    other = invoke("sample", trained_checkpoint, "--seed", "4", "--length", "30", "--no-stop")
    assert first.exit_code == 0, first.output
    assert first.output.strip() and first.output == again.output
    assert other.output != first.output


def test_sample_with_prime_starts_with_it(trained_checkpoint):
    result = invoke("sample", trained_checkpoint, "--prime", "the cats", "--length", "5", "--no-stop")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("the cats ")


def test_sample_stops_at_eos_for_word_models(trained_checkpoint):
    result = invoke("sample", trained_checkpoint, "--length", "500", "--temperature", "0.5")
    assert result.exit_code == 0
    assert result.output.count("\n") == 1  # one sentence, ended by <eos> rendered as a line break


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_sample_rejects_bad_temperature(trained_checkpoint, value):
    assert_one_line_error(invoke("sample", trained_checkpoint, "--temperature", value), 2, "--temperature")


def test_sample_rejects_unknown_prompt_words(trained_checkpoint):
    result = invoke("sample", trained_checkpoint, "--prime", "the zebra")
    assert_one_line_error(result, 2, "'zebra'", "outside the model's vocabulary")


def test_sample_missing_checkpoint(tmp_path):
    assert_one_line_error(invoke("sample", tmp_path / "nope.pt"), 1, "does not exist")


def test_train_missing_config(tmp_path):
    assert_one_line_error(invoke("train", tmp_path / "missing.yaml"), 2, "does not exist")


def test_train_bad_key_in_file_and_override(tiny_config_file):
    config = tiny_config_file(model={"hiden_size": 8})
    assert_one_line_error(
        invoke("train", config), 2, "unknown key 'hiden_size'", "did you mean 'hidden_size'"
    )
    config = tiny_config_file()
    assert_one_line_error(invoke("train", config, "train.lrate=1"), 2, "did you mean 'lr'")


def test_debug_shows_the_traceback(tmp_path):
    result = invoke("--debug", "sample", tmp_path / "nope.pt")
    assert result.exit_code != 0
    assert result.exception is not None and "does not exist" in str(result.exception)


def run_lmtrain(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lmtrain", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


def test_train_then_sample_in_real_subprocesses(tiny_config_file, tmp_path):
    config = tiny_config_file(train={"max_steps": 10})
    trained = run_lmtrain("train", config, "--no-progress")
    assert trained.returncode == 0, trained.stderr
    sampled = run_lmtrain("sample", tmp_path / "run" / "best.pt", "--length", "20", "--seed", "1")
    assert sampled.returncode == 0, sampled.stderr
    assert sampled.stdout.strip()
    failed = run_lmtrain("sample", tmp_path / "run" / "best.pt", "--temperature", "0")
    assert failed.returncode == 2
    assert failed.stderr.strip().count("\n") == 0 and "Traceback" not in failed.stderr


def test_sigint_saves_last_checkpoint_and_resume_continues(tiny_config_file, tmp_path):
    config = tiny_config_file(train={"max_steps": 100_000, "eval_interval": 20})
    process = subprocess.Popen(
        [sys.executable, "-m", "lmtrain", "train", str(config), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    last = tmp_path / "run" / "last.pt"
    try:
        deadline = time.monotonic() + 60
        while not last.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert last.exists(), "training never wrote last.pt"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "--resume" in stderr
    step = torch.load(last, weights_only=True)["progress"]["step"]
    assert step >= 20
    resumed = run_lmtrain("train", config, f"train.max_steps={step + 5}", "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert torch.load(last, weights_only=True)["progress"]["step"] == step + 5
    assert not (tmp_path / "run" / ".lock").exists()
    assert os.listdir(tmp_path / "run")
