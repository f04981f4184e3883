"""The PNG encoder writes files that any reader accepts and that decode to the pixels given."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
import torch

from lmtrain.analysis.canvas import Canvas, text_width
from lmtrain.analysis.png import SIGNATURE, encode_png


def read_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk, checking each CRC on the way."""
    assert data[:8] == SIGNATURE
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + body), f"bad CRC in {kind}"
        chunks.append((kind, body))
        offset += 12 + length
    return chunks


def decode(data: bytes) -> torch.Tensor:
    """The image `[3, H, W]` of a PNG written by `encode_png` (RGB, 8 bits, filter type 0 rows)."""
    chunks = read_chunks(data)
    assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour, compression, filtering, interlace) == (8, 2, 0, 0, 0)
    raw = zlib.decompress(chunks[1][1])
    assert len(raw) == height * (1 + 3 * width)
    rows = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(height, 1 + 3 * width)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(height, width, 3).permute(2, 0, 1)


def test_png_decodes_to_the_pixels_given():
    image = torch.randint(0, 256, (3, 7, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(decode(encode_png(image)), image)


def test_png_opens_in_pillow_when_it_is_installed():
    image_module = pytest.importorskip("PIL.Image")
    canvas = Canvas(40, 20)
    canvas.fill(0, 0, 10, 20, (255, 0, 0))
    opened = image_module.open(io.BytesIO(encode_png(canvas.pixels)))
    assert opened.size == (40, 20) and opened.mode == "RGB"
    assert opened.getpixel((5, 5)) == (255, 0, 0) and opened.getpixel((30, 5)) == (255, 255, 255)


def test_png_refuses_what_is_not_an_rgb_byte_image():
    with pytest.raises(ValueError, match="uint8 image"):
        encode_png(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="uint8 image"):
        encode_png(torch.zeros(4, 4, 4, dtype=torch.uint8))


def test_canvas_clips_and_draws_lines_and_text():
    canvas = Canvas(30, 20)
    canvas.fill(-5, -5, 3, 3, (0, 0, 0))  # partly outside: clipped, no error
    assert canvas.pixels[:, :3, :3].eq(0).all() and canvas.pixels[:, 3:, 3:].eq(255).all()
    canvas.line(0, 10, 29, 10, (0, 0, 255))
    assert canvas.pixels[:, 10, :].tolist() == [[0] * 30, [0] * 30, [255] * 30]
    before = canvas.pixels.clone()
    canvas.text("a1", 0, 12, scale=1)
    changed = (canvas.pixels != before).any(0).nonzero()
    assert changed[:, 1].max() < text_width("a1", scale=1) and changed[:, 0].min() >= 12
