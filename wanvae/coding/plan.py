"""One plan for every pass, and the two drivers that follow it.

A coder describes each of its parts (an encoder, a decoder) as `Stages`: an optional
whole-map stage before, a spatially local stage that may run on tiles, an optional
whole-map stage after. For one input shape, a `PassPlan` says the tile grid of the local
stage (or none) and the time chunks the input is cut into: the first frame alone, then
`step` frames at a time. Both drivers take their chunks from it:

- `run_clip` runs a whole clip: chunk by chunk over whole frames, or, on a grid, the local
  stage tile-major or time-major (`tiling`) between the other two run chunk by chunk;
- `Stepper` runs one chunk at a time with the causal state it carries, as a stream does.

So a stream pushed in any split gives the whole clip's numbers bit for bit: the same
chunks through the same calls. Nothing here knows which model runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from .heap import bound_heap, release, reuse_heap
from .state import CausalState, StepContext
from .tiling import TiledStep, TileGrid, tile_major, time_major

StageFn = Callable[[Tensor, StepContext], Tensor]
Progress = Callable[[int, int], None]  # (tiles or chunks done, of how many)

# Activation budget for one time chunk of a whole-clip pass: a chunk of frames at the
# widest, full-resolution layer should take about this much per tensor. Measured on the
# full Wan 2.1 model at 256x256 (2 cores): 4-frame chunks (this budget) ran 20.7 s at 2.2 GB
# peak, 8-frame chunks 26.5 s at 2.8 GB, 16-frame chunks 23.7 s at 3.6 GB; bigger chunks do
# not make the convs faster here, they only cost memory. Narrow models get longer chunks.
CHUNK_BYTES = 96 * 2**20


def _same_frames(frames: int) -> int:
    return frames


@dataclass(frozen=True)
class Stages:
    """A part of a coder as the drivers see it. A step over whole frames is `pre`, `local`,
    `post` in turn, with one causal state; on a tile grid, `local` runs per tile."""

    local: StageFn  # spatially local: may run tile by tile, handing seams on
    pre: StageFn | None = None  # whole map, at the part's input rate
    post: StageFn | None = None  # whole map, at the local stage's output rate
    scale_in: int = 1  # local's input pixels per grid unit
    scale_out: int = 1  # local's output pixels per grid unit
    frames_out: Callable[[int], int] = _same_frames  # local's output frames for so many input frames

    def whole(self, x: Tensor, ctx: StepContext) -> Tensor:
        """One step over whole frames."""
        if self.pre is not None:
            x = self.pre(x, ctx)
        x = self.local(x, ctx)
        return x if self.post is None else self.post(x, ctx)


@dataclass(frozen=True)
class PassPlan:
    """How one part runs over an input of one shape: its tile grid and its time chunks."""

    grid: TileGrid | None  # the local stage's blocks in grid units; None: whole frames
    step: int  # input frames per step after the first
    first: int = 1  # input frames in the first step (the causal first frame)
    # How a whole clip visits a grid: 'tile' (each tile over all chunks, then the next) or
    # 'time' (each chunk over all tiles); the coder measures which holds less (see tiling).
    # Streams are always time-major: they never hold the whole clip.
    order: str = "tile"

    def chunks(self, frames: int) -> list[slice]:
        return frame_chunks(frames, self.first, self.step)


def frame_chunks(frames: int, first: int, step: int) -> list[slice]:
    """`first` frames, then `step` at a time, over `frames` frames."""
    chunks = [slice(0, min(first, frames))]
    chunks += [slice(start, min(start + step, frames)) for start in range(first, frames, step)]
    return chunks


def chunk_frames(frame_bytes: int, multiple: int, tiled: bool = False) -> int:
    """Frames per time chunk so that one full-resolution activation (`frame_bytes` a frame)
    stays near CHUNK_BYTES, in whole multiples of `multiple`.

    Tiled passes take the shortest chunk: tiling is asked for to bound memory, and a
    smaller tile should then mean smaller activations, not longer chunks of the same size.
    """
    if tiled:
        return multiple
    return max(multiple, CHUNK_BYTES // max(frame_bytes, 1) // multiple * multiple)


def in_chunks(run: StageFn, x: Tensor, chunks: list[slice], on_layer: Callable[[], None] | None = None) -> Tensor:
    """`run` over the time chunks of `x` in order, one causal state carried through."""
    state, outs = CausalState(), []
    for i, frames in enumerate(chunks):
        # The context holds the only reference, so old histories go as they are used;
        # the last chunk keeps none (for an image, 5 full-size copies nobody would read).
        ctx, state = StepContext(state, record=i < len(chunks) - 1, on_layer=on_layer), None
        outs.append(run(x[:, :, frames], ctx).contiguous())
        state = ctx.result(frames.stop - frames.start)
    return torch.cat(outs, dim=2)


def run_clip(stages: Stages, plan: PassPlan, x: Tensor, progress: Progress | None = None) -> Tensor:
    """`stages` over the whole clip `x` [B, C, T, H, W], in the plan's chunks and tiles.

    Whole frames run inside `heap.reuse_heap` (a pass that ends frees everything it took);
    tiled passes are bounded, handing freed pages back layer by layer. `progress(done,
    total)` is called after each tile (tile-major) or chunk (time-major) of a tiled pass.
    """
    chunks = plan.chunks(x.shape[2])
    if plan.grid is None:
        with reuse_heap(x.device.type == "cpu"):
            return in_chunks(stages.whole, x, chunks)
    h = x if stages.pre is None else in_chunks(stages.pre, x, chunks, on_layer=release)
    out_hw = (sum(plan.grid.rows) * stages.scale_out, sum(plan.grid.cols) * stages.scale_out)
    driver = time_major if plan.order == "time" else tile_major
    h = driver(stages.local, h, plan.grid, stages.scale_in, chunks, stages.frames_out(x.shape[2]), out_hw, progress)
    if stages.post is None:
        return h
    # The same chunks at the local stage's output rate, so a tiled stream gives these very numbers.
    post_chunks = [slice(stages.frames_out(c.start) if c.start else 0, stages.frames_out(c.stop)) for c in chunks]
    return in_chunks(stages.post, h, post_chunks, on_layer=release)


class Coder(Protocol):
    """What the drivers and streams need of a model (a `WanVAE` is one): its parts as stages,
    a plan per input shape, and the boundary between its steps and the caller's tensors."""

    config: Any  # spatial_ratio, temporal_ratio, z_dim, latent_frames(), pixel_frames()
    device: torch.device
    dtype: torch.dtype

    def require(self, part: str) -> None: ...
    def part_dtype(self, part: str) -> torch.dtype: ...
    def stages(self, part: str) -> Stages: ...
    def plan(self, part: str, shape: tuple[int, ...], tile: Any = None) -> PassPlan: ...
    def latents_from(self, moments: Tensor, *, sample: bool = False, generator: torch.Generator | None = None) -> Tensor: ...
    def denormalize(self, latents: Tensor) -> Tensor: ...


class Stepper:
    """One part's steps under a plan, carrying its causal state from call to call (every
    tile's own on a grid, time-major): what a stream runs, chunk by chunk."""

    def __init__(self, stages: Stages, plan: PassPlan) -> None:
        self.stages, self.plan = stages, plan
        self.state = CausalState()  # whole frames: the whole part; on a grid: pre and post
        self.tiles = TiledStep(plan.grid) if plan.grid is not None else None

    @property
    def nbytes(self) -> int:
        """Bytes of causal state held (all tiles together)."""
        return self.state.nbytes + (self.tiles.nbytes if self.tiles is not None else 0)

    def __call__(self, x: Tensor) -> Tensor:
        stages = self.stages
        if x.device.type == "cpu":
            bound_heap()  # a long stream would otherwise fragment the heap chunk after chunk
        # The context takes the only reference to the state, so each layer's old history is
        # freed as soon as the layer has used it (see StepContext).
        ctx, self.state = StepContext(self.state, on_layer=release), None
        if self.tiles is None:
            y = stages.whole(x, ctx)
        else:
            h = x if stages.pre is None else stages.pre(x, ctx)
            out_hw = (h.shape[3] // stages.scale_in * stages.scale_out, h.shape[4] // stages.scale_in * stages.scale_out)
            h = self.tiles(stages.local, h, stages.scale_in, out_hw)
            y = h if stages.post is None else stages.post(h, ctx)
        self.state = ctx.result(x.shape[2])
        return y.contiguous()
