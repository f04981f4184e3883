"""A minimal PNG encoder: an RGB image tensor to the bytes of a .png file, with the standard library.

A PNG file (https://www.w3.org/TR/png/) is an 8-byte signature followed by chunks, each
`length (4 bytes) | type (4 ASCII letters) | data | CRC-32 of type and data`. Three chunks suffice:

    IHDR  width, height, bit depth 8, colour type 2 (RGB), compression 0, filter 0, interlace 0
    IDAT  the zlib-compressed scanlines, each row prefixed by its filter type (0: none)
    IEND  empty, the end of the file

Plots are mostly flat colour, which zlib compresses well without PNG's per-row prediction filters.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import torch
from torch import Tensor

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chunk(kind: bytes, data: bytes) -> bytes:
    """One chunk: its length, type, data and the CRC-32 of type and data (big-endian throughout)."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(image: Tensor) -> bytes:
    """The PNG file of a uint8 RGB image `[3, H, W]` (the layout TensorBoard's images use)."""
    if image.dtype != torch.uint8 or image.dim() != 3 or image.size(0) != 3:
        raise ValueError(f"expected a uint8 image [3, H, W], got {image.dtype} {list(image.shape)}")
    _, height, width = image.shape
    rows = image.permute(1, 2, 0).reshape(height, width * 3)  # [H, W*3]: r g b r g b ...
    filters = torch.zeros(height, 1, dtype=torch.uint8)  # filter type 0 before every row
    scanlines = torch.cat([filters, rows], dim=1).contiguous().numpy().tobytes()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(scanlines, 9)) + chunk(b"IEND", b"")
    )


def write_png(image: Tensor, path: Path) -> None:
    """Write `image` `[3, H, W]` as a PNG file at `path`."""
    Path(path).write_bytes(encode_png(image))
