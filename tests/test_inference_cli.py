"""`lmtrain sample`, `score` and `eval` from a checkpoint, through CliRunner and real subprocesses."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lmtrain.cli
from lmtrain.checkpoint import load_checkpoint, make_checkpoint, restore_model, save_checkpoint
from lmtrain.config import config_from_dict
from lmtrain.data.corpus import load_corpus
from lmtrain.model import RNNLanguageModel
from lmtrain.training.trainer import train

from helpers import assert_one_line_error, invoke, tiny_config_dict

SENTENCE = "the cats that the dog loves were hungry ."
WRONG_NUMBER = "the cats that the dog loves was hungry ."


@pytest.fixture(autouse=True)
def one_line_errors(monkeypatch):
    """Errors as one red line, even after a test elsewhere ran `lmtrain --debug` in this process
    (the --debug flag sets a module-level switch in lmtrain.cli that nothing resets)."""
    monkeypatch.setitem(lmtrain.cli.debug_mode, "on", False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_corpus) -> Path:
    """best.pt of a tiny word-level LSTM trained on the agreement grammar."""
    folder = tmp_path_factory.mktemp("inference-run")
    config = config_from_dict(tiny_config_dict(tiny_corpus, folder / "run", train={"max_steps": 40}))
    train(config, report=lambda line: None, show_progress=False)
    return folder / "run" / "best.pt"


def test_help_documents_every_option():
    sample_help = invoke("sample", "--help").output
    for option in (
        "--temperature", "--greedy", "--top-k", "--top-p", "--length", "--num-samples", "--seed",
        "--prime", "--no-stop", "--no-unk", "--unknown", "--output", "--device", "--weights",
    ):  # fmt: skip
        assert option in sample_help, option
    score_help = invoke("score", "--help").output
    for option in (
        "TEXT",
        "--file",
        "--per-token",
        "--json",
        "--unknown",
        "--device",
        "--weights",
        "final <eos>",
    ):
        assert option in score_help, option
    eval_help = invoke("eval", "--help").output
    for option in ("--file", "--split", "--batch-size", "--bptt", "--json", "--device", "--weights"):
        assert option in eval_help, option


# ----- sample ---------------------------------------------------------------------------------------


def test_several_samples_are_one_line_each_and_reproducible(checkpoint):
    args = ("sample", checkpoint, "--num-samples", "5", "--seed", "2", "--top-k", "10", "--length", "50")
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 5 and any(lines)
    assert invoke(*args).output == result.output
    assert invoke(*args[:-4], "--seed", "3", "--length", "50").output != result.output


def test_samples_without_stop_are_separated_by_a_blank_line(checkpoint):
    result = invoke("sample", checkpoint, "--num-samples", "2", "--no-stop", "--length", "30", "--no-unk")
    assert result.exit_code == 0, result.output
    assert result.output.count("\n\n") == 1 and "<unk>" not in result.output


def test_greedy_is_deterministic_whatever_the_seed(checkpoint):
    first = invoke("sample", checkpoint, "--greedy", "--seed", "1", "--prime", "the dog")
    assert first.exit_code == 0, first.output
    assert first.output.startswith("the dog ")
    assert (
        invoke("sample", checkpoint, "--greedy", "--seed", "2", "--prime", "the dog").output == first.output
    )


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("--top-k", "0"), "--top-k must be between 1 and the vocabulary size"),
        (("--top-k", "100000"), "(got 100000)"),
        (("--top-p", "0"), "--top-p must be in (0, 1]"),
        (("--top-p", "1.01"), "--top-p must be in (0, 1]"),
        (("--length", "0"), "--length must be at least 1"),
        (("--num-samples", "0"), "--num-samples must be at least 1"),
        (("--greedy", "--top-p", "0.9"), "--greedy always takes the most probable token"),
        (("--greedy", "--num-samples", "2"), "would repeat it"),
        (("--unknown", "guess"), "--unknown must be one of error, map, skip"),
        (("--device", "tpu"), "--device must be cpu, cuda, mps or auto"),
        (("--weights", "fp16"), "--weights must be one of fp32, bf16, got 'fp16'"),
    ],
)
def test_sample_rejects_bad_values_in_one_line(checkpoint, args, fragment):
    assert_one_line_error(invoke("sample", checkpoint, *args), 2, fragment)


def test_unknown_prompt_words_error_map_and_skip(checkpoint):
    refused = invoke("sample", checkpoint, "--prime", "the zebra loves")
    assert_one_line_error(
        refused, 2, "'zebra'", "outside the model's vocabulary", "--unknown map", "--unknown skip"
    )
    mapped = invoke("sample", checkpoint, "--prime", "the zebra loves", "--unknown", "map", "--length", "3")
    assert mapped.exit_code == 0 and mapped.output.startswith("the <unk> loves")
    skipped = invoke("sample", checkpoint, "--prime", "the zebra loves", "--unknown", "skip", "--length", "3")
    assert skipped.exit_code == 0 and skipped.output.startswith("the loves")


def test_output_file_instead_of_stdout(checkpoint, tmp_path):
    target = tmp_path / "samples.txt"
    result = invoke("sample", checkpoint, "--num-samples", "3", "--output", target)
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and "wrote 3 sample(s)" in result.stderr
    assert len(target.read_text(encoding="utf-8").splitlines()) == 3
    missing = invoke("sample", checkpoint, "--output", tmp_path / "no" / "such" / "dir.txt")
    assert_one_line_error(missing, 2, "cannot write --output")


def test_cuda_that_is_not_there_is_a_clear_error(checkpoint):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert_one_line_error(invoke("sample", checkpoint, "--device", "cuda"), 2, "no CUDA GPU is available")


def save_as_if_written_on_cuda(checkpoint: dict, path: Path) -> None:
    """torch.save with every storage recorded as living on cuda:0, byte for byte what a GPU run writes.

    A CPU-only machine cannot make CUDA tensors, but the location of a storage in the file is only a
    tag that `torch.save` asks its registered taggers for; a tagger that answers "cuda:0" first
    writes exactly the tags of tensors saved from a GPU.
    """

    def tag_cuda(storage) -> str:
        return "cuda:0"

    torch.serialization.register_package(-1000, tag_cuda, lambda storage, location: None)
    try:
        torch.save(checkpoint, path)
    finally:
        registry = torch.serialization._package_registry
        registry[:] = [entry for entry in registry if entry[1] is not tag_cuda]


def test_a_checkpoint_saved_from_cuda_tensors_runs_on_the_cpu(checkpoint, tmp_path):
    gpu_file = tmp_path / "gpu.pt"
    save_as_if_written_on_cuda(torch.load(checkpoint, weights_only=True), gpu_file)
    if not torch.cuda.is_available():
        # Proof that the file really holds CUDA locations: torch.load without map_location fails here.
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(gpu_file, weights_only=True)
    model, _, _ = restore_model(load_checkpoint(gpu_file))
    assert {parameter.device.type for parameter in model.parameters()} == {"cpu"}
    args = ("--prime", "the dog", "--seed", "4", "--length", "8")
    from_gpu, from_cpu = invoke("sample", gpu_file, *args), invoke("sample", checkpoint, *args)
    assert from_gpu.exit_code == 0, from_gpu.output
    assert from_gpu.output == from_cpu.output
    assert invoke("score", gpu_file, SENTENCE).output == invoke("score", checkpoint, SENTENCE).output


# ----- score ----------------------------------------------------------------------------------------


def test_score_ranks_inputs_and_reports_nats_bits_and_perplexity(checkpoint):
    result = invoke("score", checkpoint, SENTENCE, WRONG_NUMBER, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["tokenizer"] == "word" and "final <eos>" in report["scored"]
    first, second = report["inputs"]
    assert first["text"] == SENTENCE and second["text"] == WRONG_NUMBER
    assert sorted([first["rank"], second["rank"]]) == [1, 2]
    for entry in report["inputs"]:
        assert entry["tokens"] == 10  # 9 words and the final <eos>
        assert entry["log2_prob"] == pytest.approx(entry["log_prob"] / math.log(2))
        assert entry["perplexity"] == pytest.approx(math.exp(-entry["log_prob"] / 10))
    table = invoke("score", checkpoint, SENTENCE, WRONG_NUMBER).output.splitlines()
    best = SENTENCE if first["rank"] == 1 else WRONG_NUMBER
    assert table[0].startswith("rank") and table[1].endswith(best) and table[1].split()[0] == "1"


def test_score_per_token_and_file_input(checkpoint, tmp_path):
    inputs = tmp_path / "inputs.txt"
    inputs.write_text(f"{SENTENCE}\n\n{WRONG_NUMBER}\n", encoding="utf-8")
    from_file = invoke("score", checkpoint, "--file", inputs, "--per-token", "--json")
    assert from_file.exit_code == 0, from_file.output
    report = json.loads(from_file.output)
    assert [entry["text"] for entry in report["inputs"]] == [SENTENCE, WRONG_NUMBER]  # blank line skipped
    tokens = [entry["token"] for entry in report["inputs"][0]["per_token"]]
    assert tokens == [*SENTENCE.split(), "<eos>"]
    from_args = json.loads(
        invoke("score", checkpoint, SENTENCE, WRONG_NUMBER, "--per-token", "--json").output
    )
    assert from_args["inputs"] == report["inputs"]
    table = invoke("score", checkpoint, SENTENCE, "--per-token").output
    assert "were" in table.split() and "<eos>" in table.split()


@pytest.mark.parametrize(
    "args, fragment",
    [
        ((), "nothing to score"),
        (("",), "the input is empty"),
        (("the dog .", "  "), "input 2 is empty"),
        (("the zebra",), "the input has words outside the model's vocabulary: 'zebra'"),
        (("the dog", "--file", "x.txt"), "give TEXT arguments or --file, not both"),
    ],
)
def test_score_input_errors(checkpoint, args, fragment):
    assert_one_line_error(invoke("score", checkpoint, *args), 2, fragment)


# ----- eval -----------------------------------------------------------------------------------------


def test_eval_of_the_validation_split_equals_the_trainers_validation_perplexity(checkpoint):
    saved = load_checkpoint(checkpoint)
    eval_batch_size = saved["config"]["train"]["eval_batch_size"]
    result = invoke("eval", checkpoint, "--split", "valid", "--batch-size", eval_batch_size, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["loss"] == pytest.approx(saved["progress"]["valid_loss"], rel=1e-12)
    assert report["perplexity"] == pytest.approx(math.exp(saved["progress"]["valid_loss"]), rel=1e-12)
    assert report["bptt"] == saved["config"]["train"]["bptt"]


def test_bf16_weights_sample_and_cost_little_perplexity(checkpoint):
    """`--weights bf16` rounds every weight to bfloat16: `sample` runs on it, and `eval` and `score` show
    what the rounding costs, a change in the third significant figure here."""
    sampled = invoke("sample", checkpoint, "--weights", "bf16", "--length", "20", "--no-stop")
    assert sampled.exit_code == 0, sampled.output
    assert sampled.output.strip()
    reports = {
        weights: json.loads(
            invoke("eval", checkpoint, "--split", "valid", "--json", "--weights", weights).output
        )
        for weights in ("fp32", "bf16")
    }
    assert reports["bf16"]["perplexity"] != reports["fp32"]["perplexity"]
    assert reports["bf16"]["perplexity"] == pytest.approx(reports["fp32"]["perplexity"], rel=0.01)
    scored = invoke("score", checkpoint, SENTENCE, "--json", "--weights", "bf16")
    assert scored.exit_code == 0, scored.output


def test_eval_of_a_file_reads_it_as_one_stream_by_default(checkpoint, tiny_corpus, tmp_path):
    text = tmp_path / "held-out.txt"
    text.write_text(f"{SENTENCE}\nthe zebra was hungry .\n", encoding="utf-8")
    result = invoke("eval", checkpoint, "--file", text, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["batch_size"] == 1 and report["text_tokens"] == 16 and report["scored_tokens"] == 15
    assert report["unk_tokens"] == 1
    plain = invoke("eval", checkpoint, "--file", text, "--bptt", "3").output
    assert plain.startswith(
        f"perplexity {report['perplexity']:.3f}"
    )  # with carried state, bptt changes nothing
    assert "<unk>: 1 (6.2%)" in plain


@pytest.mark.parametrize(
    "args, fragment",
    [
        ((), "give either --file FILE or --split valid|test"),
        (("--split", "valid", "--file", "x.txt"), "give either --file FILE or --split valid|test"),
        (("--split", "train"), "--split must be one of valid, test"),
        (("--split", "test"), "has no test split"),
        (("--split", "valid", "--batch-size", "0"), "--batch-size must be at least 1"),
        (("--split", "valid", "--bptt", "0"), "--bptt must be at least 1"),
    ],
)
def test_eval_usage_errors(checkpoint, args, fragment):
    assert_one_line_error(invoke("eval", checkpoint, *args), 2, fragment)


def test_missing_files_are_named(checkpoint, tmp_path):
    missing = tmp_path / "missing.txt"
    assert_one_line_error(
        invoke("score", checkpoint, "--file", missing), 1, f"--file {missing} does not exist"
    )
    assert_one_line_error(invoke("eval", checkpoint, "--file", missing), 1, f"{missing} does not exist")


def test_eval_of_a_text_too_short_for_the_batch(checkpoint, tmp_path):
    text = tmp_path / "short.txt"
    text.write_text("the dog .\n", encoding="utf-8")
    assert_one_line_error(invoke("eval", checkpoint, "--file", text, "--batch-size", "3"), 1, "fewer than")


# ----- bidirectional checkpoints -------------------------------------------------------------------


@pytest.fixture(scope="module")
def bidirectional_checkpoint(tmp_path_factory, tiny_corpus) -> Path:
    """An untrained bidirectional word model's checkpoint: enough to check what each command reports."""
    folder = tmp_path_factory.mktemp("bidirectional")
    config = config_from_dict(tiny_config_dict(tiny_corpus, folder / "run", model={"bidirectional": True}))
    tokenizer = load_corpus(config.data).tokenizer
    torch.manual_seed(0)
    model = RNNLanguageModel(tokenizer.vocab_size, config.model)
    path = folder / "bidirectional.pt"
    save_checkpoint(make_checkpoint(config, tokenizer, model, None, {"step": 0}), path)
    return path


def test_bidirectional_checkpoints_score_both_ways_sample_and_evaluate(bidirectional_checkpoint):
    report = json.loads(invoke("score", bidirectional_checkpoint, SENTENCE, "--json").output)
    (entry,) = report["inputs"]
    assert entry["tokens"] == entry["backward"]["tokens"] == 10
    assert entry["backward"]["log_prob"] != entry["log_prob"]
    assert "backward log P" in invoke("score", bidirectional_checkpoint, SENTENCE).output
    sampled = invoke("sample", bidirectional_checkpoint, "--length", "5", "--no-stop")
    assert sampled.exit_code == 0 and len(sampled.output.split()) == 5
    evaluated = invoke("eval", bidirectional_checkpoint, "--split", "valid")
    assert evaluated.exit_code == 0, evaluated.output
    assert "the mean of the forward and backward models' losses" in evaluated.output


# ----- real processes -------------------------------------------------------------------------------


def test_one_sample_is_written_token_by_token(checkpoint, monkeypatch):
    pieces = []
    monkeypatch.setattr(lmtrain.cli, "write_now", lambda out, text: pieces.append(text))
    result = invoke("sample", checkpoint, "--prime", "the dog", "--no-stop", "--length", "12")
    assert result.exit_code == 0, result.output
    assert len(pieces) == 1 + 12 + 1  # the prompt, each token as it comes, the final line break
    assert pieces[0] == "the dog" and all(piece.strip() or piece == "\n" for piece in pieces[1:-1])


def test_score_in_a_real_subprocess(checkpoint):
    # (test_cli.py runs `sample` in a real subprocess already.)
    scored = subprocess.run(
        [sys.executable, "-m", "lmtrain", "score", str(checkpoint), SENTENCE, WRONG_NUMBER, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert scored.returncode == 0, scored.stderr
    assert scored.stdout == invoke("score", checkpoint, SENTENCE, WRONG_NUMBER, "--json").output
    assert json.loads(scored.stdout)["inputs"][0]["tokens"] == 10


def test_sample_into_a_pipe_closed_early_exits_quietly(checkpoint):
    """`lmtrain sample ... | head -1`: the reader goes away after one line; no traceback, no error."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lmtrain",
            "sample",
            str(checkpoint),
            "--num-samples",
            "400",
            "--length",
            "40",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout.readline().strip()
    process.stdout.close()
    errors = process.stderr.read().decode()
    assert process.wait(timeout=60) in (0, 141, -13) and errors == "", errors  # -13: killed by SIGPIPE
