"""Named corpora: the registry, verified downloads (against a local HTTP server), the mirror, the splits."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile
from pathlib import Path

import pytest

from lmtrain.config import DATASET_NAMES, DataConfig
from lmtrain.data import datasets
from lmtrain.data import text as text_module
from lmtrain.data.corpus import load_corpus
from lmtrain.data.datasets import Dataset, Download, fetch_dataset, fetch_file
from lmtrain.errors import ConfigError, DataError

from helpers import SHARED_DATA, needs_shared_data

# ---------------------------------------------------------------- the bundled corpus


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
    with pytest.raises(
        ConfigError,
        match="unknown data.dataset 'wikitext'; choose one of: agreement, ptb, tinyshakespeare, wikitext2",
    ):
        datasets.resolve_dataset("wikitext")


# ---------------------------------------------------------------- the registry


def test_the_config_accepts_exactly_the_registered_names():
    assert sorted(DATASET_NAMES) == sorted(datasets.DATASETS)


@pytest.mark.parametrize("name", sorted(datasets.DATASETS))
def test_registry_entries_are_complete(name):
    dataset = datasets.DATASETS[name]
    assert dataset.name == name and dataset.description and dataset.split_note and dataset.license
    for download in dataset.downloads:
        assert download.url.startswith("https://"), download.url
        assert len(download.sha256) == 64 and int(download.sha256, 16) >= 0
        assert download.path.startswith(f"{name}/"), "the cache and mirror layout is <name>/<file>"


# ---------------------------------------------------------------- the real corpora, from the mirror


@needs_shared_data
def test_tiny_shakespeare_from_the_mirror_splits_90_10_by_characters(tmp_path, monkeypatch):
    monkeypatch.setenv("LMTRAIN_DATA_MIRROR", str(SHARED_DATA))
    paths = fetch_dataset(datasets.DATASETS["tinyshakespeare"], tmp_path, datasets.data_mirror())
    assert (tmp_path / "tinyshakespeare" / "input.txt").read_bytes() == (
        SHARED_DATA / "tinyshakespeare" / "input.txt"
    ).read_bytes()
    train, valid = paths.train.read_text(encoding="utf-8"), paths.valid.read_text(encoding="utf-8")
    assert (len(train), len(valid), paths.test) == (1_003_854, 111_540, None)  # nanoGPT's numbers
    assert train + valid == (SHARED_DATA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")


@needs_shared_data
def test_ptb_from_a_file_url_mirror_has_the_published_token_counts(tmp_path, monkeypatch):
    monkeypatch.setenv("LMTRAIN_DATA_MIRROR", SHARED_DATA.resolve().as_uri())
    monkeypatch.setenv("LMTRAIN_CACHE", str(tmp_path))
    corpus = load_corpus(DataConfig(dataset="ptb"))
    assert corpus.tokenizer.vocab_size == 10_000
    assert (corpus.train.numel(), corpus.valid.numel(), corpus.test.numel()) == (929_589, 73_760, 82_430)


# ---------------------------------------------------------------- downloads, from a local server

GOOD = b"the cat sat\nthe dog sat\n" * 1000


class Handler(http.server.BaseHTTPRequestHandler):
    """`/good.txt`, `/corrupt.txt` (other bytes), `/error.txt` (HTTP 500), `/truncated.txt` (cut short)."""

    requests: list[str] = []

    def do_GET(self):  # noqa: N802 (the name http.server dispatches to)
        Handler.requests.append(self.path)
        if self.path == "/error.txt":
            self.send_error(500, "broken on purpose")
            return
        body = GOOD.replace(b"cat", b"cow") if self.path == "/corrupt.txt" else GOOD
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path == "/truncated.txt":
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    Handler.requests = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def download_of(url: str, body: bytes = GOOD) -> Download:
    return Download("toy/train.txt", url, hashlib.sha256(body).hexdigest(), len(body))


def leftovers(cache: Path) -> list[Path]:
    return [path for path in cache.rglob("*") if path.is_file()]


def test_download_is_verified_and_happens_once(server, tmp_path):
    download = download_of(f"{server}/good.txt")
    path = fetch_file(download, tmp_path)
    assert path == tmp_path / "toy" / "train.txt" and path.read_bytes() == GOOD
    assert fetch_file(download, tmp_path) == path
    assert Handler.requests == ["/good.txt"]  # the second call used the cache
    assert leftovers(tmp_path) == [path]


def test_checksum_mismatch_keeps_nothing(server, tmp_path):
    download = download_of(f"{server}/corrupt.txt")
    with pytest.raises(DataError) as info:
        fetch_file(download, tmp_path)
    message = str(info.value)
    assert f"expected {download.sha256}; nothing was kept" in message
    assert f"place it at {tmp_path / 'toy' / 'train.txt'}" in message
    assert leftovers(tmp_path) == []


def test_server_error_keeps_nothing(server, tmp_path):
    with pytest.raises(DataError, match=r"cannot download .*/error.txt: HTTP 500 .*offline\? download"):
        fetch_file(download_of(f"{server}/error.txt"), tmp_path)
    assert leftovers(tmp_path) == []


def test_interrupted_download_keeps_nothing(server, tmp_path):
    with pytest.raises(DataError, match=rf"stopped after 8,000 of {len(GOOD):,} bytes; nothing was kept"):
        fetch_file(download_of(f"{server}/truncated.txt"), tmp_path)
    assert leftovers(tmp_path) == []


def test_offline_error_says_how_to_place_the_file_by_hand(tmp_path):
    download = download_of("http://127.0.0.1:9/train.txt")  # the discard port: connection refused
    with pytest.raises(DataError) as info:
        fetch_file(download, tmp_path)
    message = str(info.value)
    assert "offline? download http://127.0.0.1:9/train.txt on a machine with internet" in message
    assert f"place it at {tmp_path / 'toy' / 'train.txt'} (sha256 {download.sha256})" in message
    assert "or set LMTRAIN_DATA_MIRROR to a folder holding toy/train.txt" in message


def test_a_damaged_cached_file_is_reported_not_used(tmp_path):
    download = download_of("http://127.0.0.1:9/train.txt")
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "train.txt").write_bytes(GOOD[:-1])
    with pytest.raises(
        DataError, match="has sha256 .*, expected .*delete it and run `lmtrain data fetch` again"
    ):
        fetch_file(download, tmp_path)


# ---------------------------------------------------------------- mirrors and derived splits


def toy_dataset(splits, downloads) -> Dataset:
    return Dataset("toy", "a toy", "word", splits, tuple(downloads), "none", "toy split")


def test_a_mirror_folder_serves_files_and_names_what_it_lacks(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    (mirror / "toy").mkdir(parents=True)
    for name in ("train", "valid"):
        (mirror / "toy" / f"{name}.txt").write_bytes(GOOD)
    downloads = [
        Download(f"toy/{name}.txt", "https://example.invalid/x", hashlib.sha256(GOOD).hexdigest(), None)
        for name in ("train", "valid", "test")
    ]
    dataset = toy_dataset(datasets.plain_files("toy"), downloads)
    monkeypatch.setenv("LMTRAIN_DATA_MIRROR", str(mirror))
    cache = tmp_path / "cache"
    assert not datasets.is_available(dataset, cache, datasets.data_mirror())
    with pytest.raises(DataError, match=r"the mirror LMTRAIN_DATA_MIRROR=file://.* should hold toy/test.txt"):
        fetch_dataset(dataset, cache, datasets.data_mirror())
    (mirror / "toy" / "test.txt").write_bytes(GOOD)
    assert datasets.is_available(dataset, cache, datasets.data_mirror())
    paths = fetch_dataset(dataset, cache, datasets.data_mirror())
    assert paths.test == cache / "toy" / "test.txt" and paths.test.read_bytes() == GOOD


def test_mirror_that_is_not_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LMTRAIN_DATA_MIRROR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="LMTRAIN_DATA_MIRROR=.*nowhere is not a folder"):
        datasets.data_mirror()


def test_zip_members_are_extracted_to_split_files(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in ("train", "valid", "test"):
            archive.writestr(f"toy-1/wiki.{name}.tokens", f"{name} text\n")
    mirror = tmp_path / "mirror"
    (mirror / "toy").mkdir(parents=True)
    (mirror / "toy" / "toy.zip").write_bytes(buffer.getvalue())
    download = Download(
        "toy/toy.zip", "https://example.invalid/toy.zip", hashlib.sha256(buffer.getvalue()).hexdigest(), None
    )
    members = {name: f"toy-1/wiki.{name}.tokens" for name in ("train", "valid", "test")}
    dataset = toy_dataset(datasets.zip_members("toy/toy.zip", members), [download])
    paths = fetch_dataset(dataset, tmp_path / "cache", mirror.as_uri())
    assert paths.valid == tmp_path / "cache" / "toy" / "valid.txt"
    assert [getattr(paths, s).read_text() for s in ("train", "valid", "test")] == [
        "train text\n",
        "valid text\n",
        "test text\n",
    ]


def test_fraction_split_cuts_at_characters_not_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(text_module, "TEXT_CHUNK_BYTES", 7)
    source = tmp_path / "all.txt"
    text = "é€ab\n" * 20  # 100 characters, 140 bytes
    source.write_text(text, encoding="utf-8")
    outputs = tuple(tmp_path / f"{name}.txt" for name in ("a", "b", "c"))
    datasets.split_fractions(source, (0.9, 0.05, 0.05), outputs, "strict")
    pieces = [path.read_text(encoding="utf-8") for path in outputs]
    assert [len(piece) for piece in pieces] == [90, 5, 5]
    assert "".join(pieces) == text


# ---------------------------------------------------------------- the `lmtrain data` commands


def test_data_list_names_every_corpus_and_its_status():
    from typer.testing import CliRunner

    from lmtrain.cli import app

    result = CliRunner().invoke(app, ["data", "list"])
    assert result.exit_code == 0, result.output
    for name in datasets.DATASETS:
        assert name in result.output
    assert "bundled" in result.output and "cache: " in result.output


def test_data_fetch_of_an_unknown_name_lists_the_choices(monkeypatch):
    from typer.testing import CliRunner

    from lmtrain import cli
    from lmtrain.cli import app

    monkeypatch.setitem(cli.debug_mode, "on", False)  # an earlier `--debug` invocation leaves it set

    result = CliRunner().invoke(app, ["data", "fetch", "penn"])
    assert result.exit_code == 2
    assert (
        "unknown data.dataset 'penn'; choose one of: agreement, ptb, tinyshakespeare, wikitext2"
        in result.output
    )


@needs_shared_data
def test_data_fetch_prepares_the_splits(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from lmtrain.cli import app

    monkeypatch.setenv("LMTRAIN_CACHE", str(tmp_path))
    result = CliRunner().invoke(app, ["data", "fetch", "tinyshakespeare"])
    assert result.exit_code == 0, result.output
    assert f"train {tmp_path / 'tinyshakespeare' / 'train.txt'} (1,003,854 bytes)" in result.output
    assert f"valid {tmp_path / 'tinyshakespeare' / 'valid.txt'} (111,540 bytes)" in result.output
