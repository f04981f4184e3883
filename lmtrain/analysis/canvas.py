"""A tiny raster canvas: rectangles, lines and text drawn into a uint8 RGB image tensor `[3, H, W]`.

matplotlib is not a dependency of lmtrain, and a chart is only rectangles, straight lines and a few
labels. A `Canvas` draws them straight into the tensor that TensorBoard's `add_image` and
`lmtrain.analysis.png.encode_png` take, so the same picture comes out on every install and tests can check
its pixels. Text uses a 3 x 5 pixel font (capital letters, digits, a little punctuation), scaled up.
"""

from __future__ import annotations

import torch

Color = tuple[int, int, int]
WHITE: Color = (255, 255, 255)
INK: Color = (60, 60, 60)
GRID: Color = (225, 225, 225)

# Each glyph is 5 rows of 3 pixels ("1" = ink). Lower-case text is drawn with the capitals.
FONT = {
    "a": ("010", "101", "111", "101", "101"),
    "b": ("110", "101", "110", "101", "110"),
    "c": ("011", "100", "100", "100", "011"),
    "d": ("110", "101", "101", "101", "110"),
    "e": ("111", "100", "110", "100", "111"),
    "f": ("111", "100", "110", "100", "100"),
    "g": ("011", "100", "101", "101", "011"),
    "h": ("101", "101", "111", "101", "101"),
    "i": ("111", "010", "010", "010", "111"),
    "j": ("001", "001", "001", "101", "010"),
    "k": ("101", "101", "110", "101", "101"),
    "l": ("100", "100", "100", "100", "111"),
    "m": ("101", "111", "111", "101", "101"),
    "n": ("110", "101", "101", "101", "101"),
    "o": ("010", "101", "101", "101", "010"),
    "p": ("110", "101", "110", "100", "100"),
    "q": ("010", "101", "101", "110", "011"),
    "r": ("110", "101", "110", "101", "101"),
    "s": ("011", "100", "010", "001", "110"),
    "t": ("111", "010", "010", "010", "010"),
    "u": ("101", "101", "101", "101", "111"),
    "v": ("101", "101", "101", "101", "010"),
    "w": ("101", "101", "111", "111", "101"),
    "x": ("101", "101", "010", "101", "101"),
    "y": ("101", "101", "010", "010", "010"),
    "z": ("111", "001", "010", "100", "111"),
    "0": ("111", "101", "101", "101", "111"),
    "1": ("010", "110", "010", "010", "111"),
    "2": ("111", "001", "111", "100", "111"),
    "3": ("111", "001", "111", "001", "111"),
    "4": ("101", "101", "111", "001", "001"),
    "5": ("111", "100", "111", "001", "111"),
    "6": ("111", "100", "111", "101", "111"),
    "7": ("111", "001", "001", "001", "001"),
    "8": ("111", "101", "111", "101", "111"),
    "9": ("111", "101", "111", "001", "111"),
    " ": ("000", "000", "000", "000", "000"),
    ".": ("000", "000", "000", "000", "010"),
    ",": ("000", "000", "000", "010", "100"),
    ":": ("000", "010", "000", "010", "000"),
    "-": ("000", "000", "111", "000", "000"),
    "+": ("000", "010", "111", "010", "000"),
    "=": ("000", "111", "000", "111", "000"),
    "<": ("001", "010", "100", "010", "001"),
    ">": ("100", "010", "001", "010", "100"),
    "(": ("010", "100", "100", "100", "010"),
    ")": ("010", "001", "001", "001", "010"),
    "/": ("001", "001", "010", "100", "100"),
    "%": ("101", "001", "010", "100", "101"),
    "|": ("010", "010", "010", "010", "010"),
    "'": ("010", "010", "000", "000", "000"),
    "?": ("111", "001", "010", "000", "010"),
}
GLYPH_WIDTH, GLYPH_HEIGHT = 3, 5


class Canvas:
    """A `width` x `height` image, `pixels` `[3, H, W]` uint8; (0, 0) is the top-left corner."""

    def __init__(self, width: int, height: int, background: Color = WHITE):
        self.width, self.height = width, height
        self.pixels = torch.tensor(background, dtype=torch.uint8)[:, None, None].repeat(1, height, width)

    def fill(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        """Paint the rectangle of pixels x0 <= x < x1, y0 <= y < y1 (clipped to the canvas)."""
        x0, x1 = max(x0, 0), min(x1, self.width)
        y0, y1 = max(y0, 0), min(y1, self.height)
        if x0 < x1 and y0 < y1:
            self.pixels[:, y0:y1, x0:x1] = torch.tensor(color, dtype=torch.uint8)[:, None, None]

    def line(
        self, x0: float, y0: float, x1: float, y1: float, color: Color, width: int = 1, dashed: bool = False
    ) -> None:
        """A straight line `width` pixels thick: a square brush stamped at every pixel step along it.

        Dashed lines draw 6 steps and leave 4 out, repeatedly.
        """
        steps = max(round(abs(x1 - x0)), round(abs(y1 - y0)), 1)
        offset = width // 2
        for i in range(steps + 1):
            if dashed and i % 10 >= 6:
                continue
            x = round(x0 + (x1 - x0) * i / steps) - offset
            y = round(y0 + (y1 - y0) * i / steps) - offset
            self.fill(x, y, x + width, y + width, color)

    def text(self, text: str, x: int, y: int, color: Color = INK, scale: int = 2) -> None:
        """Draw `text` with its top-left corner at (x, y); characters the font lacks show as "?"."""
        for char in text.lower():
            for row, bits in enumerate(FONT.get(char, FONT["?"])):
                for col, bit in enumerate(bits):
                    if bit == "1":
                        left, top = x + col * scale, y + row * scale
                        self.fill(left, top, left + scale, top + scale, color)
            x += (GLYPH_WIDTH + 1) * scale


def text_width(text: str, scale: int = 2) -> int:
    """Width in pixels of `text` drawn at `scale` (without the space after its last character)."""
    return max(len(text) * (GLYPH_WIDTH + 1) * scale - scale, 0)


def text_height(scale: int = 2) -> int:
    return GLYPH_HEIGHT * scale
