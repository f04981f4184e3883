"""Fuzzing: arbitrary text and arbitrary YAML give a result or an LmtrainError, never anything else."""

from __future__ import annotations

import string
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmtrain.config import load_config
from lmtrain.data.tokenizer import CharTokenizer, WordTokenizer
from lmtrain.errors import LmtrainError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(st.text())
def test_char_tokenizer_round_trips_any_text(text):
    tokenizer = CharTokenizer.build(text)
    assert tokenizer.decode(tokenizer.encode(text)) == text


@FUZZ
@given(st.text(), st.text(), st.integers(1, 3), st.one_of(st.none(), st.integers(3, 10)))
def test_word_tokenizer_on_any_text(train, other, min_freq, max_vocab):
    try:
        tokenizer = WordTokenizer.build(train.splitlines(), min_freq=min_freq, max_vocab=max_vocab)
    except LmtrainError:
        return
    ids = tokenizer.encode(other)
    assert all(0 <= i < tokenizer.vocab_size for i in ids)
    assert ids.count(tokenizer.eos_id) == len(other.splitlines()) + sum(
        word == "<eos>" for line in other.splitlines() for word in line.split()
    )
    # Text made of vocabulary words comes back with its words and line structure.
    words = tokenizer.decode(ids).split()
    assert len(words) == sum(len(line.split()) for line in other.splitlines())


@FUZZ
@given(st.text())
def test_config_loader_on_any_text(tmp_path_factory, text):
    path = Path(tmp_path_factory.mktemp("fuzz")) / "config.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except LmtrainError:
        pass


yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=True), st.text(max_size=8)
)
keys = st.sampled_from(
    [
        "run_dir",
        "data",
        "model",
        "train",
        "log",
        "dataset",
        "train",
        "valid",
        "tokenizer",
        "cell",
        "hidden_size",
    ]
    + ["lr", "bptt", "batch_size", "epochs", "max_steps", "dropout", "num_layers", "x", ""]
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(keys, children, max_size=5)),
    max_leaves=12,
)


@FUZZ
@given(
    yaml_values,
    st.lists(st.text(alphabet=string.ascii_lowercase + ".=-0123456789[]{}:", max_size=12), max_size=3),
)
def test_config_loader_on_any_yaml_and_overrides(tmp_path_factory, value, overrides):
    path = Path(tmp_path_factory.mktemp("fuzz")) / "config.yaml"
    path.write_text(yaml.safe_dump(value), encoding="utf-8")
    try:
        load_config(path, overrides)
    except LmtrainError:
        pass
