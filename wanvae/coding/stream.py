"""StreamEncoder and StreamDecoder: push frames in any split, get final latents (or pixels).

A stream cuts what it is given into the chunks of the coder's `PassPlan`, the very chunks
a whole-clip `encode` or `decode` runs, and steps them through a `plan.Stepper`, so any
split of pushes gives exactly the numbers of one call on the whole clip. Memory holds at
most one chunk of input plus the causal state, whatever the stream's length.

A coder is anything with `plan.Coder`'s public methods (a `WanVAE` is one): the streams
never ask which model runs.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from .. import checks
from .plan import Coder, Stepper
from .tiling import TileArg

FRAME_POLICIES = ("error", "trim", "pad")


class _Chunker:
    """Holds pushed frames until a whole chunk (`first`, then `step` frames) is there."""

    def __init__(self, first: int, step: int) -> None:
        self.first, self.step = first, step
        self.pending: list[Tensor] = []
        self.count = 0
        self.started = False

    def add(self, x: Tensor) -> None:
        if x.shape[2]:
            self.pending.append(x)
            self.count += x.shape[2]

    def take(self, n: int) -> Tensor:
        buf = torch.cat(self.pending, dim=2) if len(self.pending) > 1 else self.pending[0]
        head, rest = buf[:, :, :n], buf[:, :, n:]
        self.pending = [rest] if rest.shape[2] else []
        self.count -= n
        self.started = True
        return head

    def drop_last(self, n: int) -> None:
        buf = torch.cat(self.pending, dim=2)
        keep = buf[:, :, : buf.shape[2] - n]
        self.pending = [keep] if keep.shape[2] else []
        self.count -= n

    def ready(self) -> list[Tensor]:
        out = []
        while self.count >= (self.step if self.started else self.first):
            out.append(self.take(self.step if self.started else self.first))
        return out


class StreamEncoder:
    """Encode a video pushed in pieces; latents come out as soon as they are final.

    push(frames [B, 3, n, H, W]) returns the normalised latents [B, 16, k, H/8, W/8] that
    became final (k may be 0); flush() ends the stream and returns the rest. The total
    frame count must be 1 + 4k, or `frame_policy` says what to do with the remainder:
    'trim' drops it, 'pad' repeats the last frame; `trimmed` / `padded` say how many.

    `chunk` is the frames per encoder step after the first (a multiple of 4): smaller
    means latents sooner and less memory. By default it is what `encode` uses for this
    frame size, and then the stream's latents equal `encode`'s bit for bit.
    """

    def __init__(
        self,
        vae: Coder,
        tile: TileArg = None,
        frame_policy: str = "error",
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
        chunk: int | None = None,
    ) -> None:
        vae.require("encoder")
        r = vae.config.temporal_ratio
        if chunk is not None and (chunk < r or chunk % r):
            raise ValueError(f"chunk must be a positive multiple of {r} frames, got {chunk}")
        self.chunk = chunk
        if frame_policy not in FRAME_POLICIES:
            raise ValueError(f"frame_policy must be one of {FRAME_POLICIES}, got {frame_policy!r}")
        self.vae, self.tile, self.frame_policy = vae, tile, frame_policy
        self.sample, self.generator = sample, generator
        self.frames_in = 0
        self.latents_out = 0
        self.trimmed = 0
        self.padded = 0
        self.closed = False
        self._shape: tuple[int, int, int] | None = None
        self._chunker: _Chunker | None = None
        self._stepper: Stepper | None = None
        self._last: Tensor | None = None

    @property
    def state_nbytes(self) -> int:
        """Bytes of causal state the stream holds (all tiles together)."""
        return self._stepper.nbytes if self._stepper else 0

    def _setup(self, x: Tensor) -> None:
        b, _, _, h, w = x.shape
        self._shape = (b, h, w)
        plan = self.vae.plan("encoder", (b, x.shape[1], 0, h, w), self.tile)
        if self.chunk:
            plan = replace(plan, step=self.chunk)
        self._stepper = Stepper(self.vae.stages("encoder"), plan)
        self._chunker = _Chunker(plan.first, plan.step)

    @torch.no_grad()
    def push(self, frames: Tensor) -> Tensor:
        if self.closed:
            raise ValueError("push() after flush(): this stream has ended; start a new StreamEncoder")
        x = checks.check_video(frames, self.vae.config, self.vae.part_dtype("encoder"), whole_clip=False)
        if self._shape is None:
            self._setup(x)
        elif (x.shape[0], *x.shape[3:]) != self._shape:
            b, h, w = self._shape
            raise ValueError(f"pushed frames are [B={x.shape[0]}, H={x.shape[3]}, W={x.shape[4]}], but the stream started with [B={b}, H={h}, W={w}]")
        self.frames_in += x.shape[2]
        self._last = x[:, :, -1:]
        self._chunker.add(x)
        return self._run(self._chunker.ready(), x)

    @torch.no_grad()
    def flush(self) -> Tensor:
        """End the stream: encode what is left, applying the frame policy."""
        if self.closed:
            raise ValueError("flush() called twice: this stream has ended")
        if self._chunker is None:
            raise ValueError("flush() before any frames were pushed")
        r = self.vae.config.temporal_ratio
        extra = (self.frames_in - 1) % r
        if extra:
            if self.frame_policy == "error":
                raise ValueError(checks.frame_count_error(self.frames_in, r) + " (or use frame_policy='trim' or 'pad')")
            if self.frame_policy == "trim":
                self._chunker.drop_last(extra)
                self.trimmed = extra
            else:
                self.padded = r - extra
                self._chunker.add(self._last.expand(-1, -1, self.padded, -1, -1))
        self.closed = True
        chunks = self._chunker.ready()
        if self._chunker.count:
            chunks.append(self._chunker.take(self._chunker.count))
        return self._run(chunks, self._last)

    def _run(self, chunks: list[Tensor], like: Tensor) -> Tensor:
        vae = self.vae
        outs = [vae.latents_from(self._stepper(chunk), sample=self.sample, generator=self.generator) for chunk in chunks]
        if not outs:
            b, h, w = self._shape
            s = vae.config.spatial_ratio
            return like.new_empty(b, vae.config.z_dim, 0, h // s, w // s)
        out = torch.cat(outs, dim=2)
        self.latents_out += out.shape[2]
        return out


class StreamDecoder:
    """Decode latents pushed in pieces: push(latents [B, 16, n, h, w]) -> pixels that became final.

    The first latent frame gives one pixel frame, every later one four. flush() decodes
    what is still held back (pushes are cut into the whole-clip decode's chunks).
    """

    def __init__(self, vae: Coder, tile: TileArg = None, *, clamp: bool = True, chunk: int | None = None) -> None:
        """`chunk`: latent frames per decoder step. 1 gives each pushed latent's frames at once
        (what a world model pushing one latent at a time wants); by default the steps are
        the whole-clip decode's, and then the frames equal `decode`'s bit for bit."""
        vae.require("decoder")
        if chunk is not None and chunk < 1:
            raise ValueError(f"chunk must be a positive number of latent frames, got {chunk}")
        self.vae, self.tile, self.clamp, self.chunk = vae, tile, clamp, chunk
        self.latents_in = 0
        self.frames_out = 0
        self.closed = False
        self._shape: tuple[int, int, int] | None = None
        self._chunker: _Chunker | None = None
        self._stepper: Stepper | None = None

    @property
    def state_nbytes(self) -> int:
        """Bytes of causal state the stream holds (all tiles together)."""
        return self._stepper.nbytes if self._stepper else 0

    def _setup(self, z: Tensor) -> None:
        b, _, _, h, w = z.shape
        self._shape = (b, h, w)
        plan = self.vae.plan("decoder", (b, z.shape[1], 0, h, w), self.tile)
        if self.chunk:
            plan = replace(plan, step=self.chunk)
        self._stepper = Stepper(self.vae.stages("decoder"), plan)
        self._chunker = _Chunker(plan.first, plan.step)

    @torch.no_grad()
    def push(self, latents: Tensor) -> Tensor:
        if self.closed:
            raise ValueError("push() after flush(): this stream has ended; start a new StreamDecoder")
        z = checks.check_latents(latents, self.vae.config, self.vae.part_dtype("decoder"))
        if self._shape is None:
            self._setup(z)
        elif (z.shape[0], *z.shape[3:]) != self._shape:
            raise ValueError(f"pushed latents are {tuple(z.shape)}, but the stream started with [B, h, w] = {list(self._shape)}")
        self.latents_in += z.shape[2]
        self._chunker.add(self.vae.denormalize(z))
        return self._run(self._chunker.ready())

    @torch.no_grad()
    def flush(self) -> Tensor:
        if self.closed:
            raise ValueError("flush() called twice: this stream has ended")
        self.closed = True
        if self._chunker is None or not self._chunker.count:
            return self._run([])
        return self._run([self._chunker.take(self._chunker.count)])

    def _run(self, chunks: list[Tensor]) -> Tensor:
        vae = self.vae
        s = vae.config.decoded_spatial_ratio
        outs = []
        for z in chunks:
            video = self._stepper(z)
            outs.append(video.clamp_(-1.0, 1.0) if self.clamp else video)
        if not outs:
            b, h, w = self._shape or (1, 0, 0)
            return torch.empty(b, vae.config.image_channels, 0, h * s, w * s, dtype=vae.dtype, device=vae.device)
        out = torch.cat(outs, dim=2)
        self.frames_out += out.shape[2]
        return out
