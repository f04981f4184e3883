"""Shared fixtures: a tiny generated corpus and a tiny training config that trains in about a second."""

from __future__ import annotations

import os
from pathlib import Path

# The test models are tiny: one thread runs them fastest, and on a busy 2-core machine several
# threads per process fighting over the cores made the suite about 5 times slower. Set before torch
# is imported, and inherited by the subprocesses the CLI tests start.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from lmtrain.data.agreement import generate_corpus  # noqa: E402

from helpers import SHARED_DATA, tiny_config_dict  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory) -> Path:
    """Every test uses one fresh cache and never the network: the shared data is the only mirror.

    Without the shared data a mirror folder that is empty stands in, so that a test that would
    download fails fast (tests that need real corpora skip first, see `helpers.needs_shared_data`).
    """
    cache = tmp_path_factory.mktemp("lmtrain-cache")
    mirror = SHARED_DATA if SHARED_DATA.is_dir() else tmp_path_factory.mktemp("empty-mirror")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LMTRAIN_CACHE", str(cache))
        patch.setenv("LMTRAIN_DATA_MIRROR", str(mirror))
        yield cache


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A folder with train.txt (300 sentences) and valid.txt (40) from the agreement grammar."""
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "train.txt").write_text("\n".join(generate_corpus(300, seed=1)) + "\n", encoding="utf-8")
    (folder / "valid.txt").write_text("\n".join(generate_corpus(40, seed=2)) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def tiny_config_file(tiny_corpus: Path, tmp_path: Path):
    """Write a tiny config YAML (with optional section updates) and return its path."""

    def write(**sections) -> Path:
        path = tmp_path / "tiny.yaml"
        path.write_text(yaml.safe_dump(tiny_config_dict(tiny_corpus, tmp_path / "run", **sections)))
        return path

    return write


@pytest.fixture
def step_product_backends(monkeypatch) -> list[str]:
    """The backend of every `StepProduct` made while the test runs, in order."""
    from lmtrain.fast.step_product import StepProduct

    backends = []
    original_init = StepProduct.__init__

    def recording_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        backends.append(self.backend)

    monkeypatch.setattr(StepProduct, "__init__", recording_init)
    return backends


def pytest_collection_modifyitems(config, items):
    """With the fast layer off (`LMTRAIN_FAST=off`), the tests of the fast layer itself are skipped; every
    other test runs, on the reference and native backends."""
    from lmtrain.model.backends import fast_layer

    if fast_layer():
        return
    skip = pytest.mark.skip(reason="tests lmtrain.fast itself, which LMTRAIN_FAST=off turns off")
    for item in items:
        if "fast" in item.keywords:
            item.add_marker(skip)
