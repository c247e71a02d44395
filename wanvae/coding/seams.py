"""Seams: what one spatial tile hands on to the tiles to its right and below.

Exact tiling without halos. Tiles are visited in raster order, and every spatial layer
works like a causal stream along H and W: it computes the outputs whose inputs it has
seen, and hands the unconsumed tail of its input (the last rows/columns a later window
still needs) to the neighbouring tile. So each output position is computed once, from the
same numbers as in the untiled pass: no overlap, no blending, no seams, no recomputation.
The price is a lag: a tile's output block is shifted up-left by the layers' reach, and
the last tile in a row or column flushes the rest.

Along an axis with a single tile nothing is handed on and the conv pads as usual.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .state import CausalState, StepContext, zeros_along

H_DIM, W_DIM = 3, 4  # [B, C, T, H, W]


@dataclass(frozen=True)
class TilePosition:
    row: int
    col: int
    rows: int
    cols: int
    # Index of the time chunk: seams are handed on between tiles within the same chunk.
    chunk: int = 0

    def axes(self) -> tuple[tuple[int, int, int, int], ...]:
        """(tensor dim, index along it, tiles along it, index along the other axis)."""
        return ((H_DIM, self.row, self.rows, self.col), (W_DIM, self.col, self.cols, self.row))

    def conv_padding(self, pad: int) -> tuple[int, int, int]:
        """A conv's own (T, H, W) padding: only on axes that are not split into tiles."""
        return (0, pad if self.rows == 1 else 0, pad if self.cols == 1 else 0)


class Seams:
    """The hand-over store of one tiled pass; keyed by layer, axis, chunk and lane."""

    def __init__(self) -> None:
        self._store: dict[tuple, Tensor] = {}

    def __len__(self) -> int:
        return len(self._store)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._store.values())

    def extend(
        self,
        x: Tensor,
        tile: TilePosition,
        key: str,
        kernel: int,
        stride: int,
        pad_lo: int,
        pad_hi: int,
        conv_pads: bool = True,
    ) -> Tensor:
        """`x` widened by what the previous tiles left over, ready for a valid window op.

        Along each split axis: the left/upper neighbour's leftover (or `pad_lo` zeros at
        the image edge) goes before `x`, and `pad_hi` zeros after it at the far edge. The
        part of the result that this tile's windows do not consume is kept for the next
        tile. Axes with a single tile are left for the conv's own padding when
        `conv_pads`, else padded here.
        """
        for dim, index, count, lane in tile.axes():
            if count == 1:
                if not conv_pads and (pad_lo or pad_hi):
                    x = _pad(x, dim, pad_lo, pad_hi)
                continue
            slot = (key, dim, tile.chunk, lane)
            if index == 0:
                lead = pad_lo
                x = _pad(x, dim, lead, 0)
            else:
                x = torch.cat([self._store.pop(slot), x], dim=dim)
            if index == count - 1:
                x = _pad(x, dim, 0, pad_hi)
            else:
                n = x.shape[dim]
                consumed = stride * max(0, (n - kernel) // stride + 1)
                self._store[slot] = x.narrow(dim, consumed, n - consumed).clone()
        return x

    def align(self, x: Tensor, tile: TilePosition, key: str, like: Tensor) -> Tensor:
        """`x`, a branch that runs ahead of `like`, held back to cover exactly `like`'s positions.

        A parameter-free shortcut emits every position its input has; the layers beside it
        trail by their reach (which need not be constant from tile to tile at a stride-2
        level). Along each split axis the shortcut's positions queue up: this tile takes
        as many as `like` has, the rest go to the next tile, and the last tile takes all.
        """
        for dim, index, count, lane in tile.axes():
            if count == 1:
                continue
            slot = (key, dim, tile.chunk, lane)
            if index:
                x = torch.cat([self._store.pop(slot), x], dim=dim)
            n, have = like.shape[dim], x.shape[dim]
            if have < n or (index == count - 1 and have != n):
                raise AssertionError(f"{key}: a shortcut with {have} positions cannot line up with {n}")
            if index < count - 1:
                self._store[slot] = x.narrow(dim, n, have - n).clone()
                x = x.narrow(dim, 0, n)
        return x

    def delay(self, x: Tensor, tile: TilePosition, key: str, lag: int) -> Tensor:
        """`x` shifted to line up with a branch that lags by `lag` positions (a skip path)."""
        x = self.extend(x, tile, key, 2 * lag + 1, 1, lag, lag, conv_pads=True)
        for dim, _, count, _ in tile.axes():
            if count > 1:
                x = x.narrow(dim, lag, x.shape[dim] - 2 * lag)
        return x


def _pad(x: Tensor, dim: int, lo: int, hi: int) -> Tensor:
    if not lo and not hi:
        return x
    parts = []
    if lo:
        parts.append(zeros_along(x, dim, lo))
    parts.append(x)
    if hi:
        parts.append(zeros_along(x, dim, hi))
    return torch.cat(parts, dim=dim)


class TileContext(StepContext):
    """A step on one spatial tile: the same questions as `StepContext`, answered with the
    seams this tile takes from its upper and left neighbours and hands to the others."""

    whole_frames = False

    def __init__(
        self, state: CausalState, seams: Seams, tile: TilePosition, record: bool = True,
        on_layer: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(state, record, on_layer=on_layer)
        self.seams, self.tile = seams, tile

    def conv_input(self, x: Tensor, key: str, pad: int) -> tuple[Tensor, tuple[int, int, int]]:
        if not pad:
            return x, (0, 0, 0)
        return self.seams.extend(x, self.tile, key, 2 * pad + 1, 1, pad, pad), self.tile.conv_padding(pad)

    def window_input(self, x: Tensor, key: str, kernel: int, stride: int, pad_lo: int, pad_hi: int) -> Tensor:
        return self.seams.extend(x, self.tile, key, kernel, stride, pad_lo, pad_hi, conv_pads=False)

    def delay(self, x: Tensor, key: str, lag: int) -> Tensor:
        return self.seams.delay(x, self.tile, key, lag)

    def align(self, x: Tensor, key: str, like: Tensor) -> Tensor:
        return self.seams.align(x, self.tile, key, like)

    def add_branch(self, y: Tensor, branch, x: Tensor) -> Tensor:
        return y.add_(self.align(branch(x, self), branch.state_key + ".align", y))
