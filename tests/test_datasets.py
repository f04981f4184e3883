"""Named corpora: the bundled agreement corpus is found in the repository or regenerated identically."""

from __future__ import annotations

import pytest

from lmtrain import datasets
from lmtrain.errors import ConfigError


def test_bundled_corpus_resolves_to_the_repository_copy():
    paths = datasets.resolve_dataset("agreement")
    assert paths.train == datasets.REPO_DATA / "agreement" / "train.txt"
    assert paths.valid.exists() and paths.test.exists()


def test_without_the_repository_copy_the_corpus_is_generated_identically(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "REPO_DATA", tmp_path / "no-such-folder")
    monkeypatch.setenv("LMTRAIN_CACHE", str(tmp_path / "cache"))
    paths = datasets.resolve_dataset("agreement")
    assert paths.train == tmp_path / "cache" / "agreement" / "train.txt"
    for split in ("train", "valid", "test"):
        generated = getattr(paths, split).read_bytes()
        assert (
            generated
            == (datasets.Path(__file__).parent.parent / "data" / "agreement" / f"{split}.txt").read_bytes()
        )


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(ConfigError, match="unknown data.dataset 'wikitext'; choose one of: agreement"):
        datasets.resolve_dataset("wikitext")
