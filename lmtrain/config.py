"""Typed configuration: one YAML file, mirrored one-to-one by the sections below.

    run_dir: runs/quickstart
    resume: false | true | auto
    data:  {dataset | train/valid/test paths | file + split, errors, tokenizer, min_freq, max_vocab, ...}
    model: {cell, nonlinearity, gru_variant, spectral_radius, embedding_size, hidden_size, num_layers,
            dropout, residual, init, init_range, forget_bias, initial_state, initial_state_scale,
            bidirectional, tie_weights}
    train: {batch_size, bptt, variable_bptt, epochs, max_steps, optimizer, lr, schedule: {...},
            clip: {max_norm, value}, on_nonfinite, eval_interval, seed, device, precision, backend, ...}
    log:   {log_interval, tensorboard, grad_flow, quiet, sample_length, sample_temperature}

`load_config(path, overrides)` reads the YAML with `yaml.safe_load`, applies dotted command-line
overrides such as `train.lr=3e-4`, and validates everything at once: unknown keys (with a "did you
mean"), wrong types and out-of-range values are all listed in a single `ConfigError`.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lmtrain.errors import ConfigError


class Section(BaseModel):
    """A config section: unknown keys are errors, values are checked again when assigned, and
    floats must be finite (`.inf` or `.nan` is never a sensible learning rate or dropout)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


DATASET_NAMES = ("agreement", "tinyshakespeare", "ptb", "wikitext2")
"""The corpora `data.dataset` can name; `lmtrain.data.datasets.DATASETS` says where each comes from."""


class DataConfig(Section):
    """Where the text comes from and how it becomes tokens."""

    dataset: str | None = Field(
        None,
        description="A corpus by name: `agreement` (bundled), `tinyshakespeare`, `ptb` or `wikitext2` "
        "(downloaded once into `LMTRAIN_CACHE`); `lmtrain data list` shows them.",
    )
    train: Path | None = Field(None, description="Training text file (UTF-8).")
    valid: Path | None = Field(None, description="Validation text file (UTF-8).")
    test: Path | None = Field(None, description="Test text file (UTF-8); optional.")
    file: Path | None = Field(
        None, description="One text file (UTF-8) cut into train/valid(/test) by `data.split`."
    )
    split: list[float] | None = Field(
        None,
        description="With `data.file`: fractions of its characters for train, valid and optionally test, "
        "in file order, e.g. `[0.9, 0.05, 0.05]`.",
    )
    errors: Literal["strict", "replace"] = Field(
        "strict",
        description="Bytes that are not UTF-8: `strict` stops with their byte offset, `replace` reads "
        "them as U+FFFD.",
    )
    tokenizer: Literal["char", "word"] = Field(
        "word", description="`char`: one token per character; `word`: whitespace words plus `<eos>` per line."
    )
    min_freq: int = Field(
        1, ge=1, description="Word tokenizer: words seen fewer times in train become `<unk>`."
    )
    max_vocab: int | None = Field(
        None,
        ge=3,
        description="Word tokenizer: keep the most frequent words, at most this many types "
        "(`<unk>` and `<eos>` included).",
    )
    max_tokens: int | None = Field(
        None,
        ge=1,
        description="Debugging: keep only the first N tokens of each split (the vocabulary still comes "
        "from the whole training text).",
    )

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str | None) -> str | None:
        if name is not None and name not in DATASET_NAMES:
            raise ValueError(f"unknown dataset '{name}'; choose one of: {', '.join(sorted(DATASET_NAMES))}")
        return name

    @field_validator("split")
    @classmethod
    def _fractions(cls, split: list[float] | None) -> list[float] | None:
        if split is None:
            return None
        in_range = all(0.0 < fraction < 1.0 for fraction in split)
        if len(split) not in (2, 3) or not in_range or abs(sum(split) - 1.0) > 1e-6:
            raise ValueError(
                f"must be 2 or 3 fractions between 0 and 1 that sum to 1, e.g. [0.9, 0.05, 0.05] "
                f"(got {split})"
            )
        return split

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        has_paths = self.train is not None or self.valid is not None or self.test is not None
        sources = [self.dataset is not None, has_paths, self.file is not None]
        if sum(sources) > 1:
            raise ValueError(
                "give one of data.dataset, data.train/data.valid paths, or data.file, not several"
            )
        if self.file is not None and self.split is None:
            raise ValueError("data.file needs data.split, e.g. [0.9, 0.05, 0.05]")
        if self.split is not None and self.file is None:
            raise ValueError("data.split cuts data.file; set data.file (named datasets have fixed splits)")
        if not any(sources) or (has_paths and (self.train is None or self.valid is None)):
            raise ValueError(
                "set data.dataset (e.g. `agreement`), both data.train and data.valid, "
                "or data.file and data.split"
            )
        return self


class ModelConfig(Section):
    """The language model: embedding -> stacked recurrent layers -> dropout -> decoder."""

    cell: Literal["rnn", "gru", "lstm", "esn"] = Field(
        "lstm",
        description="Recurrent cell: `rnn` (Elman), `gru`, `lstm`, or `esn` (echo state network: a fixed "
        "random recurrent reservoir; only the input weights, embedding and decoder learn).",
    )
    nonlinearity: Literal["tanh", "relu"] = Field(
        "tanh", description="Activation g of the `rnn` and `esn` cells."
    )
    gru_variant: Literal["notes", "cudnn"] = Field(
        "notes",
        description="`gru` only. `notes`: reset gate applied to `c<t-1>` before the recurrent product, as in "
        "the notes; `cudnn`: applied after it, as `torch.nn.GRU` does (weights exchangeable with it).",
    )
    spectral_radius: float = Field(
        0.9,
        gt=0.0,
        description="`esn` only: the largest eigenvalue modulus the fixed reservoir is scaled to.",
    )
    embedding_size: int = Field(128, ge=1, description="Size of the token embedding `x<t>`.")
    hidden_size: int = Field(256, ge=1, description="Size of the hidden state `a<t>` of every layer.")
    num_layers: int = Field(2, ge=1, description="Number of stacked recurrent layers (deep RNN).")
    dropout: float = Field(
        0.2,
        ge=0.0,
        lt=1.0,
        description="Dropout probability on the embeddings, between layers and before the decoder.",
    )
    residual: bool = Field(
        False,
        description="Add each layer's input to its output where both are `hidden_size` wide (every layer "
        "above the first; the first too when `embedding_size == hidden_size`).",
    )
    init: Literal["default", "xavier", "orthogonal", "he", "identity"] = Field(
        "default",
        description="Recurrent weight initialisation: `default` U(±1/sqrt(H)) as PyTorch; `xavier` (Glorot); "
        "`orthogonal` recurrent blocks; `he` N(0, 2/fan_in); `identity`: IRNN, `W_aa = I` (`rnn` only).",
    )
    init_range: float | None = Field(
        None,
        gt=0.0,
        description="When set, every weight and bias of the model (embedding, cells, decoder) starts from "
        "U(±init_range) instead, as Zaremba et al. (2014) do (0.1 small, 0.05 medium); the lstm's forget "
        "bias is then `forget_bias`.",
    )
    forget_bias: float = Field(1.0, description="`lstm` only: the initial forget-gate bias `b_f`.")
    initial_state: Literal["zeros", "random", "learned"] = Field(
        "zeros",
        description="State `a<0>` at the start of a sequence: `zeros`; `random`: N(0, scale²) drawn afresh "
        "in training (zeros in evaluation and sampling); `learned`: a trained vector per layer.",
    )
    initial_state_scale: float = Field(
        0.1, ge=0.0, description="Standard deviation of the `random` initial state."
    )
    bidirectional: bool = Field(
        False,
        description="Also train a backward language model (right to left, predicting the previous token) "
        "sharing the embedding and decoder, as ELMo's biLM; the loss is the mean of both directions. "
        "Sampling uses the forward one.",
    )
    tie_weights: bool = Field(
        False, description="Share the embedding and decoder matrices (needs `embedding_size == hidden_size`)."
    )
    impl: Literal["auto", "reference", "native", "fused", "custom"] = Field(
        "auto",
        description="Which backend runs the recurrent layers, all computing the same function from the same "
        "parameters (checkpoints do not depend on it): `auto` picks per layer, timing native against fused "
        "where both apply (docs/backends.md); `reference`, the cell's own step loop in plain torch; "
        "`native`, torch's `nn.RNN`/`nn.LSTM`/`nn.GRU` (oneDNN, cuDNN), for `rnn`, `lstm` and `gru` with "
        "`gru_variant: cudnn`; `fused`, lmtrain's fast layer (hand-written backward, C kernels) where it "
        "has the cell (`custom` is another name for it).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        problems = []
        if self.tie_weights and self.embedding_size != self.hidden_size:
            problems.append(
                "model.tie_weights needs model.embedding_size == model.hidden_size (got "
                f"{self.embedding_size} and {self.hidden_size}): the decoder's [V, H] matrix is the "
                "embedding's [V, E] matrix"
            )
        if self.init == "identity" and self.cell != "rnn":
            problems.append(
                f"model.init 'identity' is the IRNN initialisation of the plain rnn's recurrent matrix; "
                f"use it with model.cell 'rnn' (got '{self.cell}')"
            )
        if self.residual and self.num_layers == 1 and self.embedding_size != self.hidden_size:
            problems.append(
                "model.residual connects layers of equal width, and this model has none: use "
                "model.num_layers >= 2 or model.embedding_size == model.hidden_size"
            )
        if self.impl == "native" and (
            self.cell == "esn" or (self.cell == "gru" and self.gru_variant == "notes")
        ):
            what = "the echo state network" if self.cell == "esn" else "the notes' gru"
            fix = "model.gru_variant 'cudnn' (nn.GRU's formulation) or " if self.cell == "gru" else ""
            problems.append(
                f"model.impl 'native' runs torch's nn.RNN/nn.LSTM/nn.GRU kernels, and none computes {what}; "
                f"use {fix}model.impl 'auto'"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


class ClipConfig(Section):
    """Gradient clipping, applied after backpropagation and before the optimizer step."""

    max_norm: float | None = Field(
        1.0,
        gt=0.0,
        description="Rescale all gradients together when their global L2 norm exceeds this (null: off).",
    )
    value: float | None = Field(
        None,
        gt=0.0,
        description="Clamp every gradient element to [-value, value], as char-rnn does with 5 (null: off); "
        "applied before `max_norm` when both are set.",
    )


class ScheduleConfig(Section):
    """How the learning rate changes during training (`train.lr` is its peak)."""

    name: Literal["constant", "cosine", "plateau", "epoch_decay"] = Field(
        "constant",
        description="`constant`: `lr` throughout; `cosine`: from `lr` down to `min_lr` over the run; "
        "`plateau`: divide by `factor` when validation loss stops improving (the classic PTB recipe); "
        "`epoch_decay`: divide by `factor` at the start of every epoch from `start_epoch` on "
        "(Zaremba et al.).",
    )
    warmup_steps: int = Field(
        0,
        ge=0,
        description="Raise the lr linearly from lr/warmup_steps to `lr` over the first steps (any schedule).",
    )
    min_lr: float = Field(
        0.0,
        ge=0.0,
        description="`cosine`: the final lr; `plateau`, `epoch_decay`: the lr never goes below it.",
    )
    factor: float = Field(4.0, gt=1.0, description="`plateau`, `epoch_decay`: divide the lr by this.")
    start_epoch: int = Field(
        2, ge=2, description="`epoch_decay`: the first epoch (counting from 1) that runs at lr / factor."
    )
    patience: int = Field(
        0, ge=0, description="`plateau`: evaluations without improvement tolerated before dividing."
    )


class TrainConfig(Section):
    """Truncated backpropagation through time and its optimizer."""

    batch_size: int = Field(32, ge=1, description="Parallel streams the corpus is split into.")
    bptt: int = Field(35, ge=1, description="Window length (time steps) of truncated backpropagation.")
    variable_bptt: bool = Field(
        False,
        description="Draw each window's length around `bptt` (AWD-LSTM: N(bptt, bptt_std), N(bptt/2, "
        "bptt_std) one time in 20, at least 5) and scale the lr by length/bptt.",
    )
    bptt_std: float = Field(5.0, gt=0.0, description="`variable_bptt`: standard deviation of the length.")
    epochs: int | None = Field(5, ge=1, description="Passes over the training text (null: no limit).")
    max_steps: int | None = Field(
        None,
        ge=1,
        description="Stop after this many optimizer steps, or at the end of `epochs` if that comes "
        "first (null: no step limit).",
    )
    optimizer: Literal["sgd", "adam", "adamw"] = Field("adam", description="Optimizer.")
    lr: float = Field(2e-3, gt=0.0, description="Learning rate (the peak of the schedule).")
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="SGD momentum.")
    weight_decay: float = Field(
        0.0, ge=0.0, description="Weight decay (L2 for sgd/adam, decoupled for adamw)."
    )
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="Learning-rate schedule.")
    clip: ClipConfig = Field(default_factory=ClipConfig, description="Gradient clipping.")
    on_nonfinite: Literal["stop", "skip"] = Field(
        "stop",
        description="A NaN or infinite loss or gradient: `stop` training (the last checkpoint is kept), or "
        "`skip` the batch and go on (training still stops after 10 skips in a row).",
    )
    eval_interval: int = Field(
        200, ge=1, description="Evaluate and checkpoint every N steps (and at the end)."
    )
    eval_batch_size: int = Field(10, ge=1, description="Parallel streams used for evaluation.")
    seed: int = Field(1337, description="Seed for weights, dropout, window lengths and sampling.")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="`auto` picks CUDA, then Apple's MPS, then the CPU."
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="`bf16`: bfloat16 autocast for the forward pass (CUDA only); weights stay fp32."
    )
    backend: Literal["auto", "nccl", "gloo"] = Field(
        "auto",
        description="Data-parallel runs (`torchrun`, `--nproc`): the torch.distributed backend; `auto` is "
        "`nccl` on CUDA GPUs and `gloo` on CPUs.",
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and "clip_norm" in data:
            raise ValueError(
                "train.clip_norm is now train.clip.max_norm (write `clip: {max_norm: 1.0}` under train)"
            )
        return data

    @model_validator(mode="after")
    def _some_limit(self) -> TrainConfig:
        if self.epochs is None and self.max_steps is None:
            raise ValueError("set train.epochs or train.max_steps, or training would never stop")
        return self


class LogConfig(Section):
    """What the trainer reports while it runs."""

    log_interval: int = Field(10, ge=1, description="Steps between progress-bar and TensorBoard updates.")
    tensorboard: bool = Field(True, description="Write TensorBoard event files into the run directory.")
    grad_flow: bool = Field(
        False,
        description="At each evaluation, log ‖∂L<T>/∂a<t>‖ for every step t of the training window "
        "(top layer) as scalars and a plot; costs one extra forward/backward per evaluation.",
    )
    quiet: bool = Field(
        False, description="No progress bar and no per-evaluation lines (for log files); warnings remain."
    )
    sample_length: int = Field(30, ge=0, description="Tokens of text generated at each evaluation (0: none).")
    sample_temperature: float = Field(0.8, gt=0.0, description="Temperature of those samples.")


class Config(Section):
    """A whole training run."""

    run_dir: Path = Field(Path("runs/default"), description="Where checkpoints, logs and config go.")
    resume: bool | Literal["auto"] = Field(
        False,
        description="`true`: continue the run in run_dir from its last.pt (as `--resume`); `auto`: "
        "continue when last.pt exists, else start; `false`: start (refusing to clobber a run).",
    )
    data: DataConfig
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    log: LogConfig = LogConfig()


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config, apply `section.key=value` overrides, and validate it."""
    raw = read_yaml_mapping(Path(path))
    for override in overrides:
        apply_override(raw, override)
    return config_from_dict(raw, source=str(path))


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file, or a ConfigError saying why there is none."""
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist; check the path (examples are in configs/)")
    if path.is_dir():
        raise ConfigError(
            f"config path {path} is a directory; pass a YAML file such as configs/quickstart.yaml"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {error.start}); save it as UTF-8"
        ) from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        reason = getattr(error, "problem", None) or "invalid syntax"
        raise ConfigError(f"config file {path} is not valid YAML{line}: {reason}") from None
    if raw is None:
        raise ConfigError(f"config file {path} is empty; it needs at least a `data:` section")
    if not isinstance(raw, dict):
        raise ConfigError(
            f"config file {path} holds a {type(raw).__name__}, not a mapping of sections "
            "(run_dir, data, model, train, log)"
        )
    return raw


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set `a.b=c` in the raw config dict, after checking that `a.b` names a config key."""
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r} is not of the form section.key=value (e.g. train.lr=3e-4)")
    names = key.strip().split(".")
    check_key_path(names)
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"override {override!r}: cannot parse {text!r} as a YAML value") from None
    node = raw
    for depth, name in enumerate(names[:-1]):
        child = node.setdefault(name, {})
        if child is None:
            child = node[name] = {}
        if not isinstance(child, dict):
            section = ".".join(names[: depth + 1])
            raise ConfigError(
                f"override {override!r}: '{section}' in the config file is a {type(child).__name__}, "
                "not a section of keys; fix the config file"
            )
        node = child
    node[names[-1]] = value


def check_key_path(names: list[str]) -> None:
    """Raise a ConfigError with a suggestion when a dotted key names no config field."""
    section: type[BaseModel] | None = Config
    for depth, name in enumerate(names):
        fields = section.model_fields if section is not None else {}
        if name not in fields:
            prefix = ".".join(names[:depth])
            where = f"section '{prefix}'" if prefix else "the top level"
            raise ConfigError(f"override key '{'.'.join(names)}': {unknown_key_message(name, fields, where)}")
        annotation = fields[name].annotation
        section = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    if section is not None:
        raise ConfigError(f"override key '{'.'.join(names)}' names a whole section; set one of its keys")


def unknown_key_message(name: str, valid: Any, where: str) -> str:
    """`unknown key 'x' in ...; did you mean 'y'? valid keys: ...`."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ";"
    return f"unknown key '{name}' in {where}{hint} valid keys: {', '.join(valid)}"


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Validate a raw dict into a Config, reporting every problem in one ConfigError."""
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        problems = [describe_problem(detail) for detail in error.errors()]
        listing = "; ".join(problems)
        raise ConfigError(f"{source} has {len(problems)} problem(s): {listing}") from None


def describe_problem(detail: dict[str, Any]) -> str:
    """One readable phrase for one pydantic error."""
    loc = [str(part) for part in detail["loc"]]
    key = ".".join(loc) or "config"
    if detail["type"] == "extra_forbidden":
        section = section_model(loc[:-1])
        where = f"section '{'.'.join(loc[:-1])}'" if loc[:-1] else "the top level"
        return unknown_key_message(loc[-1], section.model_fields if section else [], where)
    if detail["type"] == "missing":
        return f"'{key}' is required"
    message = detail["msg"].removeprefix("Value error, ")
    if detail["type"] == "value_error":
        return message if not loc else f"{key}: {message}"
    return f"{key}: {message} (got {detail.get('input')!r})"


def section_model(names: list[str]) -> type[BaseModel] | None:
    """The pydantic model of the section at `names`, or None."""
    section: type[BaseModel] = Config
    for name in names:
        field = section.model_fields.get(name)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        section = annotation
    return section


def config_to_yaml(config: Config) -> str:
    """The resolved config as YAML text, with every default spelled out."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
