"""Tile plans and the drivers that run the spatially local parts of the VAE tile by tile.

The encoder's down path (everything before the middle block's attention) and the
decoder's up path (everything after it) are local in space. They run on tiles, handing
seams to the neighbours (see seams.py), so the stitched result equals the untiled one to
float rounding. The middle blocks and the encoder head run on the whole 1/8-scale map,
which is small. Two orders:

- tile-major (`tile_major`): with a whole clip in memory, each tile runs over all frames
  before the next, so only one tile's causal state is alive at a time, but every frame's
  seams wait for the next tiles;
- time-major (`TiledStep`, `time_major`): every chunk visits all tiles in turn, each tile
  keeping its own slice of the causal state: what streams do, and what a whole clip does
  once the seams a tile-major pass would keep outgrow the other tiles' states.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .heap import bound_heap, release
from .seams import Seams, TileContext, TilePosition
from .state import CausalState, StepContext

# A tile must reach further than the layers' lag (about 9 latent positions for Wan 2.1),
# so every tile hands on and emits something: at least this many latent positions.
MIN_TILE_LATENTS = 16

TileArg = int | tuple[int, int] | str | None


@dataclass(frozen=True)
class TileGrid:
    """Block sizes along H and W, in the units of the tiled part's input."""

    rows: tuple[int, ...]
    cols: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def blocks(self) -> Iterator[tuple[int, int, slice, slice]]:
        """(row, col, rows, cols) of every tile, in the order that keeps the fewest seams.

        Any order that visits a tile after its upper and left neighbours is exact. Row by
        row, the seams handed down span the full width until the next row takes them;
        column by column they span the height. Going along the longer side first keeps
        the shorter seams (they are kept for every frame of a tile-major pass).
        """
        row_starts = [sum(self.rows[:i]) for i in range(len(self.rows))]
        col_starts = [sum(self.cols[:j]) for j in range(len(self.cols))]
        cells = [(i, j) for i in range(len(self.rows)) for j in range(len(self.cols))]
        if sum(self.cols) > sum(self.rows):  # wider than tall: column by column
            cells.sort(key=lambda ij: (ij[1], ij[0]))
        for i, j in cells:
            yield i, j, slice(row_starts[i], row_starts[i] + self.rows[i]), slice(col_starts[j], col_starts[j] + self.cols[j])


def split_axis(size: int, tile: int, minimum: int) -> tuple[int, ...]:
    """Split `size` into about size/tile near-equal blocks, none smaller than `minimum`."""
    n = max(1, math.ceil(size / tile))
    while n > 1 and size // n < minimum:
        n -= 1
    base, extra = divmod(size, n)
    return tuple(base + (1 if i < extra else 0) for i in range(n))


def parse_tile(
    tile: TileArg, height: int, width: int, bytes_per_pixel: float, device: torch.device | None = None
) -> tuple[int, int] | None:
    """(tile_w, tile_h) in pixels, or None for no tiling; 'auto' plans from `device`'s free memory."""
    if tile is None:
        return None
    if isinstance(tile, str):
        if tile != "auto":
            raise ValueError(f"tile must be an int, a (w, h) pair, 'auto' or None, got {tile!r}")
        return auto_tile(height, width, bytes_per_pixel, device)
    if isinstance(tile, int):
        tile = (tile, tile)
    tw, th = (int(v) for v in tile)
    if tw <= 0 or th <= 0:
        raise ValueError(f"tile sizes must be positive, got {tile}")
    return tw, th


def available_memory(device: torch.device) -> int:
    """Bytes a tile plan may think of as free on `device`: the CUDA driver's free memory
    plus what PyTorch's caching allocator holds unused (ours to reuse, invisible to the
    driver), or the RAM Linux counts as available."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def auto_tile(height: int, width: int, bytes_per_pixel: float, device: torch.device | None = None) -> tuple[int, int] | None:
    """The largest square tile whose working set fits a quarter of the free memory."""
    budget = available_memory(device or torch.device("cpu")) / 4
    pixels = budget / bytes_per_pixel
    if pixels >= height * width:
        return None
    side = max(128, int(math.sqrt(pixels)) // 64 * 64)
    return side, side


def balance(blocks: tuple[int, ...], lag: int) -> tuple[int, ...]:
    """Input blocks whose *outputs* are near-equal, for a path whose output lags by `lag` units.

    Without seams' halos, the first tile along an axis emits `lag` positions less than its
    block and the last one flushes `lag` more. The decoder's up path lags about 12 latent
    positions (98 px), so at 128-px tiles the last tile would work on 226 px and hold
    three times the causal state of the others: give the first tile the lag and take it
    from the last, keeping at least one position there.
    """
    if len(blocks) < 2 or lag <= 0:
        return blocks
    shift = min(lag, blocks[-1] - 1)
    return (blocks[0] + shift, *blocks[1:-1], blocks[-1] - shift)


def plan(height: int, width: int, tile_px: tuple[int, int], ratio: int, lag: int = 0) -> TileGrid:
    """Blocks at the 1/ratio scale for tiles of about `tile_px` (w, h) pixels.

    `lag`: how far (in blocks' units) the tiled path's output trails its input; the
    blocks are shifted so that each tile's output, where memory peaks, is about a tile.
    """
    tw, th = tile_px
    rows = split_axis(height // ratio, max(1, th // ratio), MIN_TILE_LATENTS)
    cols = split_axis(width // ratio, max(1, tw // ratio), MIN_TILE_LATENTS)
    return TileGrid(balance(rows, lag), balance(cols, lag))


def tile_major(
    run: Callable[[Tensor, StepContext], Tensor],
    x: Tensor,
    grid: TileGrid,
    scale_in: int,
    chunks: list[slice],
    out_frames: int,
    out_hw: tuple[int, int],
    progress: Callable[[int, int], None] | None = None,
    meter: list[int] | None = None,
) -> Tensor:
    """Run `run` tile by tile, each tile over all time `chunks` of `x` before the next.

    `x` is [B, C, T, H, W] with H, W = `scale_in` x the grid's units. Returns the stitched
    [B, C', out_frames, *out_hw]. Only the current tile's causal state is alive, but the
    seams handed to the next tiles are kept for every chunk until those tiles run: they
    grow with the clip. `progress(tiles done, tiles)` is called after each tile; `meter[0]`,
    if given, is raised to the peak bytes of causal state plus seams.
    """
    if x.device.type == "cpu":
        bound_heap()  # tiles of unequal shapes would otherwise fragment the heap
    seams = Seams()
    placer = _Placer()
    out: Tensor | None = None
    for done, (i, j, rows, cols) in enumerate(grid.blocks(), start=1):
        state = CausalState()
        block = x[:, :, :, rows.start * scale_in : rows.stop * scale_in, cols.start * scale_in : cols.stop * scale_in]
        t0 = 0
        for c, frames in enumerate(chunks):
            tile = TilePosition(i, j, len(grid.rows), len(grid.cols), c)
            ctx = TileContext(state, seams, tile, record=c < len(chunks) - 1, on_layer=release)
            state = None  # the context's is the only reference: old histories go as used
            y = run(block[:, :, frames], ctx)
            state = ctx.result(frames.stop - frames.start)
            if meter is not None:
                meter[0] = max(meter[0], state.nbytes + seams.nbytes)
            if out is None:
                out = y.new_empty(*y.shape[:2], out_frames, *out_hw)
            y0, x0 = placer.origin(i, j)
            out[:, :, t0 : t0 + y.shape[2], y0 : y0 + y.shape[3], x0 : x0 + y.shape[4]] = y
            t0 += y.shape[2]
        placer.done(i, j, y)
        if progress:
            progress(done, len(grid))
    assert len(seams) == 0, "a seam was handed on but never taken"
    return out


def time_major(
    run: Callable[[Tensor, StepContext], Tensor],
    x: Tensor,
    grid: TileGrid,
    scale_in: int,
    chunks: list[slice],
    out_frames: int,
    out_hw: tuple[int, int],
    progress: Callable[[int, int], None] | None = None,
    meter: list[int] | None = None,
) -> Tensor:
    """`tile_major`'s result in the other order: chunk by chunk, each over every tile, as a
    tiled stream runs. Every tile's causal state is alive (about the whole frame's), but
    seams live for one chunk only, so memory does not grow with the clip.
    `progress(chunks done, chunks)` is called after each chunk."""
    if x.device.type == "cpu":
        bound_heap()
    step = TiledStep(grid, meter)
    out: Tensor | None = None
    t0 = 0
    for c, frames in enumerate(chunks):
        y = step(run, x[:, :, frames], scale_in, out_hw)
        if out is None:
            out = y.new_empty(*y.shape[:2], out_frames, *out_hw)
        out[:, :, t0 : t0 + y.shape[2]] = y
        t0 += y.shape[2]
        del y
        if progress:
            progress(c + 1, len(chunks))
    return out


class TiledStep:
    """Time-major tiling for streams: each call visits every tile, each with its own state."""

    def __init__(self, grid: TileGrid, meter: list[int] | None = None) -> None:
        self.grid = grid
        self.states = {(i, j): CausalState() for i, j, _, _ in grid.blocks()}
        self.chunk = 0
        self.meter = meter  # meter[0]: the peak bytes of states plus seams, when given

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.states.values())

    def __call__(
        self, run: Callable[[Tensor, StepContext], Tensor], x: Tensor, scale_in: int, out_hw: tuple[int, int]
    ) -> Tensor:
        seams = Seams()
        placer = _Placer()
        out: Tensor | None = None
        rows_n, cols_n = len(self.grid.rows), len(self.grid.cols)
        for i, j, rows, cols in self.grid.blocks():
            ctx = TileContext(self.states.pop((i, j)), seams, TilePosition(i, j, rows_n, cols_n, self.chunk), on_layer=release)
            y = run(x[:, :, :, rows.start * scale_in : rows.stop * scale_in, cols.start * scale_in : cols.stop * scale_in], ctx)
            self.states[i, j] = ctx.result(x.shape[2])
            if self.meter is not None:
                self.meter[0] = max(self.meter[0], self.nbytes + seams.nbytes)
            if out is None:
                out = y.new_empty(*y.shape[:3], *out_hw)
            y0, x0 = placer.origin(i, j)
            out[:, :, :, y0 : y0 + y.shape[3], x0 : x0 + y.shape[4]] = y
            placer.done(i, j, y)
        self.chunk += 1
        assert len(seams) == 0, "a seam was handed on but never taken"
        return out


class _Placer:
    """Where each tile's output block lands: right after the blocks before it.

    Blocks are lagged (shifted up-left by the layers' reach; the last tile in a row or
    column flushes the rest), so positions come from the sizes actually produced.
    """

    def __init__(self) -> None:
        self.row_start: dict[int, int] = {0: 0}
        self.col_start: dict[int, int] = {0: 0}

    def origin(self, i: int, j: int) -> tuple[int, int]:
        return self.row_start[i], self.col_start[j]

    def done(self, i: int, j: int, y: Tensor) -> None:
        self.row_start.setdefault(i + 1, self.row_start[i] + y.shape[3])
        self.col_start.setdefault(j + 1, self.col_start[j] + y.shape[4])
