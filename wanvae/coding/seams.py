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

from .state import CHANNELS_LAST, CausalState, StepContext, prepend_history

T_DIM, H_DIM, W_DIM = 2, 3, 4  # [B, C, T, H, W]


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
        history: Tensor | None = None,
        lookback: int = 0,
    ) -> Tensor:
        """`x` widened by what the previous tiles left over, ready for a valid window op.

        Along each split axis: the left/upper neighbour's leftover (or `pad_lo` zeros at
        the image edge) goes before `x`, and `pad_hi` zeros after it at the far edge. The
        part of the result that this tile's windows do not consume is kept for the next
        tile. Axes with a single tile are left for the conv's own padding when
        `conv_pads`, else padded here. With `lookback`, that many frames of `history`
        (already widened, as the previous chunk's input was; zeros where there is none)
        go before it in time, in the same buffer.
        """
        # Per widened axis: what goes before x (a neighbour's leftover, or zeros), the zeros
        # after it, and where this tile's own leftover goes.
        axes: list[tuple[int, Tensor | int, int, tuple | None]] = []
        for dim, index, count, lane in tile.axes():
            if count == 1:
                if not conv_pads and (pad_lo or pad_hi):
                    axes.append((dim, pad_lo, pad_hi, None))
                continue
            slot = (key, dim, tile.chunk, lane)
            lead = pad_lo if index == 0 else self._store.pop(slot)
            axes.append((dim, lead, pad_hi if index == count - 1 else 0, None if index == count - 1 else slot))
        if all(isinstance(lead, int) and not lead and not tail and slot is None for _, lead, tail, _ in axes):
            return prepend_history(x, history, lookback)
        # One buffer holds the result, x written into it once: widening axis by axis with a
        # concatenation each copied the whole tile per axis. The numbers are the same: each
        # axis's part spans the axes widened before it in full and the later ones over x.
        lead_len = {dim: lead if isinstance(lead, int) else lead.shape[dim] for dim, lead, _, _ in axes}
        lead_len[T_DIM] = lookback
        shape = list(x.shape)
        for dim, _, tail, _ in axes:
            shape[dim] += lead_len[dim] + tail
        shape[T_DIM] += lookback
        layout = CHANNELS_LAST if not x.is_contiguous() and x.is_contiguous(memory_format=CHANNELS_LAST) else torch.contiguous_format
        out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=layout)
        over_x = [slice(None)] * x.dim()
        for dim in lead_len:
            over_x[dim] = slice(lead_len[dim], lead_len[dim] + x.shape[dim])
        out[tuple(over_x)] = x
        region = list(over_x)
        for dim, lead, tail, slot in axes:
            region[dim] = slice(0, lead_len[dim])
            if isinstance(lead, int):
                if lead:
                    out[tuple(region)].zero_()
            else:
                out[tuple(region)] = lead
            if tail:
                region[dim] = slice(shape[dim] - tail, shape[dim])
                out[tuple(region)].zero_()
            region[dim] = slice(None)  # later axes' parts span this one in full
            if slot is not None:
                n = shape[dim]
                consumed = stride * max(0, (n - kernel) // stride + 1)
                region[dim] = slice(consumed, n)
                self._store[slot] = out[tuple(region)].clone()
                region[dim] = slice(None)
        if lookback:  # time last: the look-back frames span the widened frame
            have = 0 if history is None else history.shape[T_DIM]
            region[T_DIM] = slice(0, lookback - have)
            out[tuple(region)].zero_()
            if have:
                region[T_DIM] = slice(lookback - have, lookback)
                out[tuple(region)] = history
        return out

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

    def conv_input(
        self, x: Tensor, key: str, pad: int, history: Tensor | None = None, lookback: int = 0
    ) -> tuple[Tensor, tuple[int, int, int]]:
        if not pad:
            return prepend_history(x, history, lookback), (0, 0, 0)
        x = self.seams.extend(x, self.tile, key, 2 * pad + 1, 1, pad, pad, history=history, lookback=lookback)
        return x, self.tile.conv_padding(pad)

    def window_input(self, x: Tensor, key: str, kernel: int, stride: int, pad_lo: int, pad_hi: int) -> Tensor:
        return self.seams.extend(x, self.tile, key, kernel, stride, pad_lo, pad_hi, conv_pads=False)

    def delay(self, x: Tensor, key: str, lag: int) -> Tensor:
        return self.seams.delay(x, self.tile, key, lag)

    def align(self, x: Tensor, key: str, like: Tensor) -> Tensor:
        return self.seams.align(x, self.tile, key, like)

    def add_branch(self, y: Tensor, branch, x: Tensor) -> Tensor:
        return y.add_(self.align(branch(x, self), branch.state_key + ".align", y))
