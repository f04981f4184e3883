"""Reading UTF-8 text files in chunks of about 1 MiB, so that a corpus larger than memory streams.

Both the corpus (tokenizing the splits) and the datasets (cutting one file into split files) read text
through these functions; a file that is missing, a directory, unreadable or not UTF-8 becomes a
`DataError` that names the path and, for a bad byte, its offset.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path

from lmtrain.errors import DataError

TEXT_CHUNK_BYTES = 1 << 20  # bytes read and decoded at a time


def check_text_file(path: Path, what: str) -> None:
    if not path.exists():
        raise DataError(f"{what} {path} does not exist; check the path in the config")
    if path.is_dir():
        raise DataError(f"{what} {path} is a directory; point the config at a text file")


def iter_text(path: Path, errors: str = "strict", what: str = "text file") -> Iterator[str]:
    """The text of a UTF-8 file in chunks of about 1 MiB, or a DataError naming the bad byte's offset.

    With `errors="replace"`, undecodable bytes become U+FFFD instead.
    """
    check_text_file(path, what)
    decoder = codecs.getincrementaldecoder("utf-8")(errors)
    offset = 0  # bytes of the file handed to the decoder so far
    try:
        with open(path, "rb") as file:
            while True:
                chunk = file.read(TEXT_CHUNK_BYTES)
                pending = len(decoder.getstate()[0])  # bytes of a character split across chunks
                try:
                    text = decoder.decode(chunk, final=not chunk)
                except UnicodeDecodeError as error:
                    # error.start counts from the start of pending + chunk.
                    at = offset - pending + error.start
                    raise DataError(
                        f"{what} {path} is not UTF-8: undecodable byte 0x{error.object[error.start]:02x} at "
                        f"byte offset {at}; convert the file to UTF-8 (e.g. iconv -t UTF-8), or set "
                        "data.errors=replace"
                    ) from None
                offset += len(chunk)
                if text:
                    yield text
                if not chunk:
                    return
    except OSError as error:
        raise DataError(f"cannot read {what} {path}: {error.strerror}") from None


def iter_lines_blocks(path: Path, errors: str, what: str) -> Iterator[str]:
    """Like `iter_text`, but every block ends at a line break (except possibly the last one).

    `"".join(blocks).splitlines()` equals the concatenation of each block's `splitlines()`, so a
    word tokenizer can encode block by block.
    """
    carry = ""
    for text in iter_text(path, errors, what):
        text = carry + text
        cut = text.rfind("\n") + 1
        carry = text[cut:]
        if cut:
            yield text[:cut]
    if carry:
        yield carry


def read_text(path: Path, what: str = "text file", errors: str = "strict") -> str:
    """A whole UTF-8 file's text (small files), or a DataError that names the path and the problem."""
    text = "".join(iter_text(path, errors, what))
    if not text.strip():
        raise DataError(f"{what} {path} is empty; it needs some text")
    return text


def count_characters(path: Path, errors: str = "strict", what: str = "text file") -> int:
    return sum(len(text) for text in iter_text(path, errors, what))


def empty_file_error(path: Path, what: str) -> DataError:
    return DataError(f"{what} {path} is empty; it needs some text")
