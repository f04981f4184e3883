"""Building lmtrain's C kernels into one shared library on first use, and loading it with ``ctypes``.

The kernels are plain C over raw float pointers: no torch headers, so a build takes about a second
and does not depend on torch's C++ ABI (unlike ``torch.utils.cpp_extension``, which needs ninja and a
long compile of torch's headers). Every ``.c`` file of this folder goes into the library, which is
cached under ``<LMTRAIN_CACHE>/kernels``, keyed by the sources and headers, the compiler, its flags and
this CPU's instruction sets (``-march=native`` code must not run on a different CPU sharing the cache).
Builds from several processes at once (``torchrun``) are safe: each writes its own file and renames it
into place. ``kernel_library()`` is the process's library, or None.

``LMTRAIN_KERNELS`` chooses: ``auto`` (default) uses the kernels when they build and falls back to torch
with one warning when they cannot, ``torch`` never builds them, ``fused`` requires them (an error names
the reason when they cannot be built). ``CC`` picks the compiler (default: cc, gcc or clang on the PATH).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

from lmtrain.data.datasets import cache_dir
from lmtrain.errors import LmtrainError

KERNEL_FOLDER = Path(__file__).parent

KERNEL_MODES = ("auto", "torch", "fused")

NATIVE_FLAGS = ("-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math")
"""Vectorized for this CPU, rows shared between OpenMP threads. -fno-trapping-math lets the compiler turn
the clamps into vector blends (torch is built with it too); no -ffast-math: NaN must survive. Linux only:
there torch ships GNU OpenMP (``libgomp.so.1``), which the library then shares; elsewhere torch's OpenMP is
another runtime, and two in one process do not mix."""

PORTABLE_FLAGS = ("-O3", "-fno-math-errno", "-fno-trapping-math")
"""Any C compiler (Apple clang included): portable, one thread."""

FLAG_SETS = (NATIVE_FLAGS, PORTABLE_FLAGS) if sys.platform.startswith("linux") else (PORTABLE_FLAGS,)


class KernelUnavailable(LmtrainError):
    """The C kernels could not be built or loaded here."""


def kernel_mode() -> str:
    """``LMTRAIN_KERNELS``: auto, torch or fused."""
    mode = os.environ.get("LMTRAIN_KERNELS", "auto").strip().lower() or "auto"
    if mode not in KERNEL_MODES:
        raise LmtrainError(
            f"LMTRAIN_KERNELS={mode!r} is not one of {', '.join(KERNEL_MODES)}; unset it or pick one"
        )
    return mode


def find_compiler() -> str | None:
    """The C compiler to use: ``CC``, else the first of cc, gcc, clang on the PATH."""
    if os.environ.get("CC"):
        return shutil.which(os.environ["CC"])
    return next((path for name in ("cc", "gcc", "clang") if (path := shutil.which(name))), None)


def cpu_signature() -> str:
    """What ``-march=native`` depends on: the CPU's flags where Linux lists them, else the machine name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.machine() + platform.processor()


def kernel_sources() -> list[Path]:
    """The C files compiled into the library."""
    return sorted(KERNEL_FOLDER.glob("*.c"))


def library_path(sources: list[Path], compiler: str, flags: tuple[str, ...], cache: Path) -> Path:
    """Where the build of ``sources`` (with this folder's headers) by this compiler, with these flags, for
    this CPU is cached."""
    key = hashlib.sha256()
    headers = sorted(KERNEL_FOLDER.glob("*.h"))
    parts = [path.read_bytes() for path in (*sources, *headers)]
    for part in (*parts, compiler.encode(), " ".join(flags).encode(), cpu_signature().encode()):
        key.update(part)
        key.update(b"\0")
    return cache / f"lmtrain-kernels-{key.hexdigest()[:16]}.so"


def build(sources: list[Path], compiler: str, flags: tuple[str, ...], target: Path) -> None:
    """Compile ``sources`` into the shared library ``target`` (written whole, then renamed into place)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=target.parent, suffix=".so.partial")
    os.close(handle)
    try:
        command = [compiler, *flags, "-shared", "-fPIC", *map(str, sources), "-o", partial]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            last_line = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise KernelUnavailable(f"{' '.join(command)} failed: {last_line}")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def load_library(sources: list[Path], cache: Path) -> ctypes.CDLL:
    """The compiled ``sources``, built on first use with the first flag set this compiler accepts."""
    compiler = find_compiler()
    if compiler is None:
        raise KernelUnavailable("no C compiler found (install gcc or clang, or set CC)")
    problems = []
    for flags in FLAG_SETS:
        target = library_path(sources, compiler, flags, cache)
        try:
            return load_or_build(sources, compiler, flags, target)
        except (KernelUnavailable, OSError, subprocess.SubprocessError) as problem:
            problems.append(str(problem))
    raise KernelUnavailable("; ".join(problems))


def load_or_build(sources: list[Path], compiler: str, flags: tuple[str, ...], target: Path) -> ctypes.CDLL:
    """The cached library at ``target``, or a fresh build of it (also when the cached file will not load:
    a damaged cache entry is replaced, not kept failing)."""
    if target.exists():
        try:
            return ctypes.CDLL(str(target))
        except OSError:
            target.unlink(missing_ok=True)
    build(sources, compiler, flags, target)
    return ctypes.CDLL(str(target))


@functools.cache
def kernel_library() -> ctypes.CDLL | None:
    """The kernels, built and loaded once per process, as ``LMTRAIN_KERNELS`` asks: None when off, or
    (with one warning) when unavailable in ``auto`` mode; in ``fused`` mode a failure is an error."""
    mode = kernel_mode()
    if mode == "torch":
        return None
    try:
        return load_library(kernel_sources(), cache_dir() / "kernels")
    except KernelUnavailable as problem:
        if mode == "fused":
            raise KernelUnavailable(
                f"LMTRAIN_KERNELS=fused, but the C kernels are unavailable: {problem}"
            ) from None
        warnings.warn(
            f"lmtrain runs its cells on torch alone (slower): the C kernels are unavailable: {problem}. "
            "Set LMTRAIN_KERNELS=torch to silence this.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
