"""Config loading: defaults, dotted overrides, and every mistake reported as one ConfigError."""

from pathlib import Path

import pytest

from lmtrain.config import Config, config_from_dict, config_to_yaml, load_config
from lmtrain.errors import ConfigError, LmtrainError

MINIMAL = "data:\n  train: t.txt\n  valid: v.txt\n"


def _write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def minimal(tmp_path) -> Path:
    return _write(tmp_path, MINIMAL)


def _error(path: Path, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


def test_config_error_exit_code():
    assert ConfigError.exit_code == 2
    assert issubclass(ConfigError, LmtrainError)


def test_minimal_config_loads_with_defaults(minimal):
    config = load_config(minimal)
    assert config.run_dir == Path("runs/default")
    assert config.data.dataset is None
    assert config.data.train == Path("t.txt") and config.data.valid == Path("v.txt")
    assert config.data.test is None
    assert (config.data.tokenizer, config.data.min_freq, config.data.max_vocab) == ("word", 1, None)
    assert config.model.model_dump() == {
        "cell": "lstm",
        "nonlinearity": "tanh",
        "gru_variant": "notes",
        "spectral_radius": 0.9,
        "embedding_size": 128,
        "hidden_size": 256,
        "num_layers": 2,
        "dropout": 0.2,
        "residual": False,
        "init": "default",
        "init_range": None,
        "forget_bias": 1.0,
        "initial_state": "zeros",
        "initial_state_scale": 0.1,
        "bidirectional": False,
        "tie_weights": False,
        "impl": "auto",
    }
    assert config.train.model_dump() == {
        "batch_size": 32,
        "bptt": 35,
        "variable_bptt": False,
        "bptt_std": 5.0,
        "epochs": 5,
        "max_steps": None,
        "optimizer": "adam",
        "lr": 0.002,
        "momentum": 0.0,
        "weight_decay": 0.0,
        "schedule": {
            "name": "constant",
            "warmup_steps": 0,
            "min_lr": 0.0,
            "factor": 4.0,
            "patience": 0,
            "start_epoch": 2,
        },
        "clip": {"max_norm": 1.0, "value": None},
        "on_nonfinite": "stop",
        "eval_interval": 200,
        "eval_batch_size": 10,
        "seed": 1337,
        "device": "auto",
        "precision": "fp32",
        "backend": "auto",
    }
    assert config.log.model_dump() == {
        "log_interval": 10,
        "tensorboard": True,
        "grad_flow": False,
        "quiet": False,
        "sample_length": 30,
        "sample_temperature": 0.8,
    }


def test_config_to_yaml_spells_out_every_default_and_reloads_equal(tmp_path, minimal):
    config = load_config(minimal)
    text = config_to_yaml(config)
    assert text.startswith("run_dir: runs/default\nresume: false\ndata:\n")
    for line in ("  hidden_size: 256\n", "  max_steps: null\n", "  lr: 0.002\n", "  tensorboard: true\n"):
        assert line in text
    reloaded = load_config(_write(tmp_path, text, "resolved.yaml"))
    assert reloaded == config
    assert config_to_yaml(reloaded) == text


def test_config_to_yaml_round_trips_non_defaults(tmp_path):
    config = config_from_dict(
        {
            "run_dir": "runs/x",
            "data": {"dataset": "agreement", "tokenizer": "char"},
            "model": {"cell": "rnn", "nonlinearity": "relu", "num_layers": 1, "dropout": 0.0},
            "train": {
                "epochs": None,
                "max_steps": 7,
                "optimizer": "sgd",
                "lr": 0.5,
                "clip": {"max_norm": None},
            },
            "log": {"tensorboard": False, "sample_length": 0},
        }
    )
    assert load_config(_write(tmp_path, config_to_yaml(config))) == config


def test_dotted_overrides(minimal):
    config = load_config(minimal, ["train.lr=3e-4", "model.cell=gru", "train.max_steps=null"])
    assert config.train.lr == 0.0003
    assert type(config.train.lr) is float
    assert config.model.cell == "gru"
    assert config.train.max_steps is None
    # Later overrides win, and an override may set a key the file does not mention.
    config = load_config(
        minimal, ["train.max_steps=10", "train.epochs=null", "train.max_steps=20", "run_dir=r"]
    )
    assert (config.train.max_steps, config.train.epochs, config.run_dir) == (20, None, Path("r"))


def test_override_values_are_validated(minimal):
    message = _error(minimal, ("model.cell=transformer",))
    assert "model.cell" in message and "transformer" in message


def test_override_of_unknown_key_suggests_the_closest(minimal):
    message = _error(minimal, ("model.cel=gru",))
    assert "unknown key 'cel' in section 'model'" in message
    assert "did you mean 'cell'?" in message
    assert (
        "valid keys: bidirectional, cell, dropout, embedding_size, forget_bias, gru_variant, hidden_size, "
        "impl, init, init_range, initial_state, initial_state_scale, nonlinearity, num_layers, residual, "
        "spectral_radius, tie_weights"
    ) in message


def test_override_of_unknown_section_suggests_the_closest(minimal):
    message = _error(minimal, ("trian.lr=1",))
    assert "unknown key 'trian' in the top level" in message
    assert "did you mean 'train'?" in message


def test_override_naming_a_whole_section_is_refused(minimal):
    assert "names a whole section" in _error(minimal, ("model=gru",))


@pytest.mark.parametrize("override", ["model", "=3", "train.lr"])
def test_override_without_key_and_equals_is_refused(minimal, override):
    assert "is not of the form section.key=value" in _error(minimal, (override,))


def test_override_value_that_is_not_yaml_is_refused(minimal):
    message = _error(minimal, ("train.lr=[",))
    assert "override 'train.lr=['" in message
    assert "cannot parse '[' as a YAML value" in message


def test_unknown_key_in_yaml_lists_valid_keys_and_suggests(tmp_path):
    path = _write(tmp_path, MINIMAL + "  trian: x.txt\n")
    message = _error(path)
    assert "1 problem(s)" in message
    assert "unknown key 'trian' in section 'data'; did you mean 'train'?" in message
    assert (
        "valid keys: dataset, errors, file, max_tokens, max_vocab, min_freq, split, test, tokenizer, "
        "train, valid" in message
    )


def test_unknown_section_in_yaml(tmp_path):
    message = _error(_write(tmp_path, MINIMAL + "modle:\n  cell: gru\n"))
    assert "unknown key 'modle' in the top level; did you mean 'model'?" in message
    assert "valid keys: data, log, model, resume, run_dir, train" in message


def test_every_problem_is_reported_at_once(tmp_path):
    text = MINIMAL + "model:\n  hidden_size: 0\n  dropout: 1.0\n  cel: gru\ntrain:\n  lr: -1\n  bptt: 0\n"
    path = _write(tmp_path, text)
    message = _error(path)
    assert message.startswith(f"{path} has 5 problem(s): ")
    assert "model.hidden_size: Input should be greater than or equal to 1 (got 0)" in message
    assert "model.dropout: Input should be less than 1 (got 1.0)" in message
    assert "unknown key 'cel' in section 'model'; did you mean 'cell'?" in message
    assert "train.bptt: Input should be greater than or equal to 1 (got 0)" in message
    assert "train.lr: Input should be greater than 0 (got -1)" in message


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    assert _error(path) == f"config file {path} does not exist; check the path (examples are in configs/)"


def test_directory(tmp_path):
    assert f"config path {tmp_path} is a directory" in _error(tmp_path)


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n"])
def test_empty_file(tmp_path, text):
    assert "is empty; it needs at least a `data:` section" in _error(_write(tmp_path, text))


def test_top_level_list(tmp_path):
    assert "holds a list, not a mapping of sections" in _error(_write(tmp_path, "- data\n- model\n"))


def test_top_level_scalar(tmp_path):
    assert "holds a str, not a mapping of sections" in _error(_write(tmp_path, "just words\n"))


def test_invalid_yaml_reports_the_line(tmp_path):
    path = _write(tmp_path, "data:\n  train: [t.txt\n  valid: v.txt\n")
    message = _error(path)
    assert message.startswith(f"config file {path} is not valid YAML at line 3, column 8: ")


def test_invalid_yaml_indentation_reports_the_line(tmp_path):
    message = _error(_write(tmp_path, "data:\n  train: t.txt\n valid: v.txt\n"))
    assert "is not valid YAML at line 3, column 2" in message


def test_non_utf8_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"data:\n  train: \xff\n")
    assert "is not UTF-8 text (byte 15)" in _error(path)


def test_dataset_and_paths_are_mutually_exclusive(tmp_path):
    message = _error(_write(tmp_path, "data:\n  dataset: agreement\n  train: t.txt\n"))
    assert "data: give one of data.dataset, data.train/data.valid paths, or data.file, not several" in message


def test_dataset_alone_is_enough(tmp_path):
    config = load_config(_write(tmp_path, "data:\n  dataset: agreement\n"))
    assert config.data.dataset == "agreement"
    assert config.data.train is None and config.data.valid is None


def test_neither_dataset_nor_both_paths(tmp_path):
    message = _error(_write(tmp_path, "data:\n  train: t.txt\n"))
    assert (
        "data: set data.dataset (e.g. `agreement`), both data.train and data.valid, "
        "or data.file and data.split" in message
    )


def test_unknown_dataset_lists_the_registry(tmp_path):
    message = _error(_write(tmp_path, "data:\n  dataset: wikitext\n"))
    assert (
        "data.dataset: unknown dataset 'wikitext'; choose one of: agreement, ptb, tinyshakespeare, wikitext2"
        in (message)
    )


def test_one_file_with_a_split(tmp_path):
    config = load_config(_write(tmp_path, "data:\n  file: all.txt\n  split: [0.9, 0.05, 0.05]\n"))
    assert config.data.file == Path("all.txt") and config.data.split == [0.9, 0.05, 0.05]


@pytest.mark.parametrize(
    "data, problem",
    [
        ("  file: a.txt\n", "data.file needs data.split"),
        ("  dataset: ptb\n  split: [0.9, 0.1]\n", "data.split cuts data.file"),
        ("  file: a.txt\n  split: [0.9, 0.2]\n", "data.split: must be 2 or 3 fractions"),
        ("  file: a.txt\n  split: [1.0]\n", "must be 2 or 3 fractions between 0 and 1 that sum to 1"),
        ("  file: a.txt\n  train: b.txt\n  split: [0.5, 0.5]\n", "not several"),
        ("  dataset: ptb\n  errors: ignore\n", "data.errors: Input should be 'strict' or 'replace'"),
        ("  dataset: ptb\n  max_tokens: 0\n", "data.max_tokens: Input should be greater than or equal to 1"),
    ],
)
def test_bad_data_sources_are_explained(tmp_path, data, problem):
    assert problem in _error(_write(tmp_path, "data:\n" + data))


def test_missing_data_section(tmp_path):
    assert "'data' is required" in _error(_write(tmp_path, "run_dir: runs/x\n"))


def test_neither_epochs_nor_max_steps(minimal):
    message = _error(minimal, ("train.epochs=null",))
    assert "train: set train.epochs or train.max_steps, or training would never stop" in message


def test_config_from_dict_names_its_source():
    with pytest.raises(ConfigError, match=r"^the checkpoint has 1 problem\(s\): 'data' is required$"):
        config_from_dict({}, source="the checkpoint")


def test_assignment_is_validated(minimal):
    config = load_config(minimal)
    assert isinstance(config, Config)
    with pytest.raises(ValueError):
        config.train.lr = -1.0


def test_override_into_a_non_mapping_section_is_an_error(tmp_path):
    path = tmp_path / "scalar_section.yaml"
    path.write_text("data: {dataset: agreement}\ntrain: 5\n")
    with pytest.raises(ConfigError, match=r"'train' in the config file is a int, not a section"):
        load_config(path, ["train.lr=0.1"])


def test_the_old_clip_norm_key_says_what_replaced_it(tmp_path):
    message = _error(_write(tmp_path, MINIMAL + "train:\n  clip_norm: 0.5\n"))
    assert "train.clip_norm is now train.clip.max_norm" in message


def test_nested_sections_take_dotted_overrides_and_resume_takes_auto(minimal):
    config = load_config(
        minimal,
        ["train.clip.value=5", "train.clip.max_norm=null", "train.schedule.name=cosine", "resume=auto"],
    )
    assert (config.train.clip.value, config.train.clip.max_norm) == (5.0, None)
    assert config.train.schedule.name == "cosine" and config.resume == "auto"
    assert load_config(minimal, ["resume=true"]).resume is True
    with pytest.raises(ConfigError, match="resume"):
        load_config(minimal, ["resume=sometimes"])
