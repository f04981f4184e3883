"""The PNG encoder writes files that any reader accepts and that decode to the pixels given."""

from __future__ import annotations

import io

import pytest
import torch

from lmtrain.analysis.canvas import Canvas, text_width
from lmtrain.analysis.png import encode_png

from helpers import decode


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
