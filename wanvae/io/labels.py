"""Column labels for the comparison strip (original | reconstruction | difference), drawn with
a 5x7 bitmap font of just the letters they need: no font file, no imaging library."""

from __future__ import annotations

import torch
from torch import Tensor

# Each glyph: 7 rows of 5 columns, '#' lit.
GLYPHS = {
    "a": ".....|.....|.###.|....#|.####|#...#|.####",
    "c": ".....|.....|.###.|#....|#....|#...#|.###.",
    "d": "....#|....#|.##.#|#..##|#...#|#...#|.####",
    "e": ".....|.....|.###.|#...#|#####|#....|.###.",
    "f": "..##.|.#..#|.#...|###..|.#...|.#...|.#...",
    "g": ".....|.####|#...#|#...#|.####|....#|.###.",
    "i": "..#..|.....|.##..|..#..|..#..|..#..|.###.",
    "l": ".##..|..#..|..#..|..#..|..#..|..#..|.###.",
    "n": ".....|.....|#.##.|##..#|#...#|#...#|#...#",
    "o": ".....|.....|.###.|#...#|#...#|#...#|.###.",
    "r": ".....|.....|#.##.|##..#|#....|#....|#....",
    "s": ".....|.....|.####|#....|.###.|....#|####.",
    "t": ".#...|.#...|###..|.#...|.#...|.#..#|..##.",
    "u": ".....|.....|#...#|#...#|#...#|#..##|.##.#",
    " ": ".....|.....|.....|.....|.....|.....|.....",
}


def text_mask(text: str, scale: int = 1) -> Tensor:
    """[7 * scale, 6 * len(text) * scale] booleans: the text, one blank column after each letter."""
    rows = []
    for r in range(7):
        row = []
        for ch in text.lower():
            glyph = GLYPHS.get(ch)
            if glyph is None:
                raise ValueError(f"no glyph for {ch!r}: the label font has {''.join(sorted(GLYPHS)).strip()}")
            row.extend(c == "#" for c in glyph.split("|")[r])
            row.append(False)
        rows.append(row)
    mask = torch.tensor(rows, dtype=torch.bool)
    return mask.repeat_interleave(scale, 0).repeat_interleave(scale, 1)


def label_bar(labels: list[str], column_width: int) -> Tensor:
    """A black bar [3, h, len(labels) * column_width] in [-1, 1] with each label centred in
    white over its column, as large as the longest label allows (1x to 3x)."""
    longest = max(len(label) for label in labels)
    scale = max(1, min(3, column_width // (6 * longest + 4)))
    height = 11 * scale
    bar = torch.full((3, height, column_width * len(labels)), -1.0)
    for i, label in enumerate(labels):
        mask = text_mask(label, scale)[:, : column_width]
        top, left = 2 * scale, i * column_width + max(0, (column_width - mask.shape[1]) // 2)
        region = bar[:, top : top + mask.shape[0], left : left + mask.shape[1]]
        region[:, mask] = 1.0
    return bar
