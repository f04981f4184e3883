"""The built wheel carries everything the C kernels need, and they build from an installed copy of it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lmtrain.fast.kernels import compiler

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ROOT / "lmtrain" / "fast" / "kernels"
INCLUDE = re.compile(r'^\s*#include\s+"([^"]+)"', re.M)


def local_includes(source: Path) -> set[str]:
    """The files a C source or header includes with quotes (from its own folder), followed transitively."""
    found: set[str] = set()
    pending = [source]
    while pending:
        for name in INCLUDE.findall(pending.pop().read_text()):
            if name not in found:
                found.add(name)
                pending.append(source.parent / name)
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """`pip wheel .` of this checkout (no dependencies, no build isolation: offline)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps", "--no-build-isolation", "-q", "-w", out],
        check=True,
        capture_output=True,
        text=True,
    )
    (built,) = out.glob("lmtrain-*.whl")
    return built


def test_wheel_holds_every_file_the_compiler_needs(wheel):
    sources = sorted(KERNELS.glob("*.c"))
    needed = {source.name for source in sources}
    for source in sources:
        needed |= local_includes(source)
    assert {"fastmath.h", "float8.h"} <= needed  # the includes were found at all
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    packaged = {Path(name).name for name in names if name.startswith("lmtrain/fast/kernels/")}
    assert needed <= packaged, f"missing from the wheel: {sorted(needed - packaged)}"


@pytest.mark.skipif(compiler.find_compiler() is None, reason="no C compiler here: no kernels to build")
def test_kernels_build_and_run_from_the_installed_wheel(wheel, tmp_path):
    """The wheel unpacked as site-packages would hold it (no source tree on the path): the kernels compile
    from its files into a fresh cache, and an LSTM window runs on them."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    probe = (
        "import torch, lmtrain\n"
        "from lmtrain.fast.kernels.compiler import kernel_library\n"
        "from lmtrain.fast.kernels.lstm import lstm_step_kernels\n"
        f"assert lmtrain.__file__.startswith({str(site)!r}), lmtrain.__file__\n"
        "assert kernel_library() is not None and lstm_step_kernels() is not None\n"
        "from lmtrain.model.cells import LSTMLayer\n"
        "layer = LSTMLayer(3, 4, impl='fused')\n"
        "y, _ = layer(torch.randn(5, 2, 3), None)\n"
        "assert y.shape == (5, 2, 4)\n"
        "print('built')\n"
    )
    cache = tmp_path / "cache"
    env = {"PYTHONPATH": str(site), "LMTRAIN_CACHE": str(cache), "LMTRAIN_KERNELS": "fused"}
    env["PATH"] = os.defpath
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "built"
    assert list((cache / "kernels").glob("lmtrain-kernels-*.so"))


@pytest.mark.fast  # the warning comes from the fast layer's kernels, which LMTRAIN_FAST=off never builds
def test_without_a_compiler_training_and_sampling_say_so_once_and_run(tmp_path):
    """No C compiler: `lmtrain train` and `lmtrain sample` warn once each that the kernels are unavailable
    and run on the other backends."""
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "run_dir: {run}\n"
        "data: {{dataset: agreement, tokenizer: word, max_tokens: 3000}}\n"
        "model: {{cell: gru, embedding_size: 8, hidden_size: 8, num_layers: 1}}\n"
        "train: {{batch_size: 4, bptt: 8, max_steps: 4, eval_interval: 4, seed: 1}}\n"
        "log: {{sample_length: 5, tensorboard: false}}\n".format(run=tmp_path / "run")
    )
    env = {**os.environ, "CC": "no-such-compiler-here", "LMTRAIN_CACHE": str(tmp_path / "cache")}
    checkpoint = tmp_path / "run" / "best.pt"
    for command in (["train", str(config), "-q"], ["sample", str(checkpoint), "--length", "5"]):
        done = subprocess.run(
            [sys.executable, "-m", "lmtrain", *command], env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stderr.count("the C kernels are unavailable: no C compiler found") == 1, done.stderr
