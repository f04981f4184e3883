"""Corpora known by name, so that a config can say `data.dataset: agreement`.

`agreement` is bundled with lmtrain: a toy English grammar with subject-verb agreement across
intervening clauses, generated deterministically by `scripts/make_agreement_corpus.py` and
committed under `data/agreement/`. When lmtrain runs from an installed wheel without that folder,
the same files are generated into the cache directory (`LMTRAIN_CACHE`, default
`~/.cache/lmtrain`), byte for byte identical.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lmtrain.errors import ConfigError

REPO_DATA = Path(__file__).resolve().parent.parent / "data"


@dataclass(frozen=True)
class SplitPaths:
    """The text files of one corpus."""

    train: Path
    valid: Path
    test: Path | None


def cache_dir() -> Path:
    """Where lmtrain keeps generated or downloaded corpora."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lmtrain"
    return Path(os.environ.get("LMTRAIN_CACHE", default))


def bundled_agreement() -> SplitPaths:
    """The bundled agreement corpus: the repository's copy, or one generated into the cache."""
    folder = REPO_DATA / "agreement"
    if not (folder / "train.txt").exists():
        from lmtrain.agreement import write_corpus

        folder = cache_dir() / "agreement"
        if not (folder / "test.txt").exists():
            write_corpus(folder)
    return SplitPaths(folder / "train.txt", folder / "valid.txt", folder / "test.txt")


DATASETS = {"agreement": bundled_agreement}


def resolve_dataset(name: str) -> SplitPaths:
    """The split files of a named corpus, or a ConfigError listing the names that exist."""
    if name not in DATASETS:
        raise ConfigError(f"unknown data.dataset '{name}'; choose one of: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]()
