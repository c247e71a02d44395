"""Encoder3d, Decoder3d and WanVAE: the Wan causal video VAEs (2.1 and 2.2, one code path).

Two ways through the same layers: `encode`/`decode` take a whole clip, and
`encode_step`/`decode_step` continue a stream from an explicit `CausalState`. The whole-clip
calls are built from the steps, so they cannot disagree.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .. import checks
from ..coding import tiling
from ..coding.state import CausalState, StepContext
from ..config import VAEConfig
from ..coding.heap import reuse_heap
from .kernels import EAGER, compiled_kernels
from ..coding.tiling import TileArg
from .layers import AttentionBlock, AvgDown3d, CausalConv3d, DownLevel, DupUp3d, PointwiseConv3d, Resample, ResidualBlock, RMSNorm, StatefulLayer, UpLevel, patchify, to_layout, unpatchify

TileProgress = Callable[[int, int], None]  # (tiles done, tiles)

# Activation budget for one temporal chunk of a whole-clip call: a chunk of frames at the
# widest, full-resolution layer should take about this much per tensor. Measured on the
# full model at 256x256 (2 cores): 4-frame chunks (this budget) ran 20.7 s at 2.2 GB peak,
# 8-frame chunks 26.5 s at 2.8 GB, 16-frame chunks 23.7 s at 3.6 GB; bigger chunks do not
# make the convs faster here, they only cost memory. Narrow models get longer chunks.
CHUNK_BYTES = 96 * 2**20


class Encoder3d(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.patch_size = cfg.patch_size
        dims = [cfg.dim * m for m in (1, *cfg.dim_mult)]
        self.conv1 = CausalConv3d(cfg.in_channels, dims[0], (3, 3, 3), 1)
        levels: list[nn.Module] = []
        scale = 1.0
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            level_in, last = in_dim, i == len(cfg.dim_mult) - 1
            layers: list[nn.Module] = []
            for _ in range(cfg.num_res_blocks):
                layers.append(ResidualBlock(in_dim, out_dim, cfg.dropout))
                if scale in cfg.attn_scales:
                    layers.append(AttentionBlock(out_dim))
                in_dim = out_dim
            temporal = not last and cfg.temporal_downsample[i]
            if not last:
                layers.append(Resample(out_dim, "downsample3d" if temporal else "downsample2d"))
                scale /= 2.0
            if cfg.level_shortcuts:
                levels.append(DownLevel(layers, AvgDown3d(level_in, out_dim, 2 if temporal else 1, 1 if last else 2)))
            else:
                levels.extend(layers)
        self.downsamples = nn.ModuleList(levels)
        self.middle = nn.ModuleList(
            [ResidualBlock(dims[-1], dims[-1], cfg.dropout), AttentionBlock(dims[-1]), ResidualBlock(dims[-1], dims[-1], cfg.dropout)]
        )
        self.head = nn.Sequential(RMSNorm(dims[-1]), nn.SiLU(), CausalConv3d(dims[-1], 2 * cfg.z_dim, (3, 3, 3), 1))

    def down(self, x: Tensor, ctx: StepContext) -> Tensor:
        """Pixels [B, 3, T, H, W] to the latent-scale map [B, C, t, h, w]; spatially local."""
        x = self.conv1(to_layout(patchify(x, self.patch_size)), ctx)
        for layer in self.downsamples:
            x = layer(x, ctx)
        return x

    def mid_head(self, x: Tensor, ctx: StepContext) -> Tensor:
        """The 1/8 map to moments [B, 2*z_dim, t, h, w]; the attention sees the whole frame."""
        x = to_layout(x)
        for layer in self.middle:
            x = layer(x, ctx)
        return self.head[2](x, ctx, pre=self.head[0])

    def forward(self, x: Tensor, ctx: StepContext) -> Tensor:
        return self.mid_head(self.down(x, ctx), ctx)


class Decoder3d(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.patch_size = cfg.patch_size
        mult = cfg.dim_mult
        dims = [cfg.decoder_dim * m for m in (mult[-1], *mult[::-1])]
        temporal_upsample = cfg.temporal_downsample[::-1]
        self.conv1 = CausalConv3d(cfg.z_dim, dims[0], (3, 3, 3), 1)
        self.middle = nn.ModuleList(
            [ResidualBlock(dims[0], dims[0], cfg.dropout), AttentionBlock(dims[0]), ResidualBlock(dims[0], dims[0], cfg.dropout)]
        )
        levels: list[nn.Module] = []
        scale = 1.0 / 2 ** (len(mult) - 2)
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0 and cfg.upsample_halves:
                in_dim //= 2  # each up-sampler halved the channels it handed on
            level_in, up = in_dim, i != len(mult) - 1
            layers: list[nn.Module] = []
            for _ in range(cfg.num_res_blocks + 1):
                layers.append(ResidualBlock(in_dim, out_dim, cfg.dropout))
                if scale in cfg.attn_scales:
                    layers.append(AttentionBlock(out_dim))
                in_dim = out_dim
            temporal = up and temporal_upsample[i]
            if up:
                handed_on = out_dim // 2 if cfg.upsample_halves else out_dim
                layers.append(Resample(out_dim, "upsample3d" if temporal else "upsample2d", handed_on))
                scale *= 2.0
            if cfg.level_shortcuts:
                levels.append(UpLevel(layers, DupUp3d(level_in, out_dim, 2 if temporal else 1, 2) if up else None))
            else:
                levels.extend(layers)
        self.upsamples = nn.ModuleList(levels)
        self.head = nn.Sequential(RMSNorm(dims[-1]), nn.SiLU(), CausalConv3d(dims[-1], cfg.in_channels, (3, 3, 3), 1))

    def mid(self, x: Tensor, ctx: StepContext) -> Tensor:
        """Latents [B, z_dim, t, h, w] to the decoder's latent-scale map; the attention sees it whole."""
        x = self.conv1(to_layout(x), ctx)
        for layer in self.middle:
            x = layer(x, ctx)
        return x

    def up(self, x: Tensor, ctx: StepContext) -> Tensor:
        """The latent-scale map to pixels [B, 3, T, H, W]; spatially local."""
        x = to_layout(x)
        for layer in self.upsamples:
            x = layer(x, ctx)
        return unpatchify(self.head[2](x, ctx, pre=self.head[0]), self.patch_size)

    def forward(self, x: Tensor, ctx: StepContext) -> Tensor:
        return self.up(self.mid(x, ctx), ctx)

    def up_lag(self) -> int:
        """Output pixels by which a tile's up-path output trails its block (98 for Wan 2.1).

        Each 3x3 conv lags one position at its own scale and an up-sampler doubles what
        came before it (the level shortcuts only follow); the tile planner uses this to
        even out the tiles' outputs.
        """
        lag = 0
        for layer in self.upsamples.modules():  # in forward order, into Wan 2.2's levels
            if isinstance(layer, ResidualBlock):
                lag += 2
            elif isinstance(layer, Resample):
                lag = 2 * lag + 1
        return (lag + 1) * self.patch_size  # the head's conv, then the unpatchify


PARTS = ("all", "encoder", "decoder")


class WanVAE(nn.Module):
    """A Wan video VAE (2.1 or 2.2, by its config). Parameter names are the original checkpoint's keys."""

    def __init__(self, config: VAEConfig | None = None, parts: str = "all") -> None:
        """`parts`: 'all', or 'encoder' / 'decoder' for a half that only encodes or decodes
        (fp32 weights: Wan 2.1's encoder is 204 MB and its decoder 280 MB; Wan 2.2's 0.6 and 2.2 GB)."""
        super().__init__()
        if parts not in PARTS:
            raise ValueError(f"parts must be one of {PARTS}, got {parts!r}")
        self.config = config = config or VAEConfig()
        self.parts = parts
        if parts != "decoder":
            self.encoder = Encoder3d(config)
            self.conv1 = PointwiseConv3d(2 * config.z_dim, 2 * config.z_dim)  # moments -> moments
        if parts != "encoder":
            self.conv2 = PointwiseConv3d(config.z_dim, config.z_dim)  # latents -> decoder input
            self.decoder = Decoder3d(config)
        # Not persistent: the checkpoint has no such tensors, and the config carries them.
        shape = (1, config.z_dim, 1, 1, 1)
        self.register_buffer("latents_mean", torch.empty(shape), persistent=False)
        self.register_buffer("latents_std", torch.empty(shape), persistent=False)
        self.reset_latent_stats()
        for name, module in self.named_modules():
            if isinstance(module, StatefulLayer):
                module.state_key = name

    def materialize_latent_stats(self) -> None:
        """Give the normalisation buffers memory (a model built on the meta device has none)
        and fill them from the config."""
        shape = self.latents_mean.shape
        self.latents_mean = torch.empty(shape, device=self.latents_mean.device if not self.latents_mean.is_meta else "cpu")
        self.latents_std = torch.empty_like(self.latents_mean)
        self.reset_latent_stats()

    @torch.no_grad()
    def reset_latent_stats(self) -> None:
        """Fill the normalisation buffers from the config (after `to_empty`, for one)."""
        shape = self.latents_mean.shape
        self.latents_mean.copy_(torch.tensor(self.config.latents_mean).view(shape))
        self.latents_std.copy_(torch.tensor(self.config.latents_std).view(shape))

    @property
    def device(self) -> torch.device:
        return self.latents_mean.device

    @property
    def dtype(self) -> torch.dtype:
        return self.latents_mean.dtype

    def cast(self, part: str, dtype: torch.dtype) -> WanVAE:
        """Run `part` ('encoder' or 'decoder', with its 1x1 conv) in `dtype`, leaving the other
        part as it is: the two may compute in different precisions. Returns self."""
        if part not in ("encoder", "decoder"):
            raise ValueError(f"part must be 'encoder' or 'decoder', got {part!r}")
        self.require(part)
        getattr(self, part).to(dtype)
        (self.conv1 if part == "encoder" else self.conv2).to(dtype)
        return self

    def compile(self, **options) -> WanVAE:
        """Run the layers' tensor math through `torch.compile(**options)`; returns self.

        What is compiled are the pure functions of `kernels` (norm and SiLU fused into a
        causal conv's input, and the per-frame attention), so whole-clip calls, tiled
        calls and streams all run compiled, with the convs between them left on their
        vendor libraries. `options` go to torch.compile (`mode="max-autotune-no-cudagraphs"`,
        `backend`, `dynamic`). `compile(disable=True)` goes back to eager. Off by default:
        on the CPU our eager path is the faster (bench/compile.py measures both).
        """
        kernels = EAGER if options.pop("disable", False) else compiled_kernels(**options)
        for module in self.modules():
            if isinstance(module, RMSNorm):
                module.kernels = kernels
        return self

    @property
    def compiled(self) -> bool:
        return any(m.kernels.compiled for m in self.modules() if isinstance(m, RMSNorm))

    def part_dtype(self, part: str) -> torch.dtype:
        """The dtype `part` ('encoder' or 'decoder') computes in: its weights' dtype, which
        may differ from the other part's (a bf16 decoder beside an fp32 encoder)."""
        module = getattr(self, part, None)
        if module is None:
            return self.dtype
        return next(module.parameters()).dtype

    def require(self, part: str) -> None:
        """Refuse to encode with a decoder-only model, or to decode with an encoder-only one."""
        if self.parts not in ("all", part):
            verb = "encode" if part == "encoder" else "decode"
            raise ValueError(f"this WanVAE holds only the {self.parts} (parts={self.parts!r}); load it with parts='all' or '{part}' to {verb}")

    def stateful_layers(self, part: str) -> list[str]:
        """Module paths of the layers that keep history in `part` ('encoder' or 'decoder')."""
        names = []
        for name, module in getattr(self, part).named_modules():
            if isinstance(module, CausalConv3d) and module.lookback:
                names.append(f"{part}.{name}")
            elif isinstance(module, Resample) and module.mode == "downsample3d":
                names.append(f"{part}.{name}.time_conv")
        return names

    def stream_state_nbytes(self, part: str, height: int, width: int, batch: int = 1) -> int:
        """Bytes of causal state a stream of `part` keeps at this frame size (pixels), tiled
        or not: every causal conv's last input frames at its own scale. Worked out by
        running a meta-device twin, which computes shapes only."""
        with torch.device("meta"):
            twin = WanVAE(self.config, parts=part)
        s, r = self.config.spatial_ratio, self.config.temporal_ratio
        state = CausalState()
        with torch.no_grad():
            # The first frame alone, then enough for every history to fill: a regular chunk
            # for the encoder, two latent frames for the decoder (its up-samplers' time convs
            # start afresh at the second).
            for frames in (1, r) if part == "encoder" else (1, 2):
                if part == "encoder":
                    x = torch.empty(batch, 3, frames, height, width, device="meta")
                    _, state = twin.encode_step(x, state)
                else:
                    z = torch.empty(batch, self.config.z_dim, frames, height // s, width // s, device="meta")
                    _, state = twin.decode_step(z, state)
        return state.nbytes // 4 * self.latents_mean.element_size()

    # ---- normalisation: applied only at the encode/decode boundary -----------------------
    def normalize(self, mean: Tensor) -> Tensor:
        return (mean - self.latents_mean.to(mean.dtype)) / self.latents_std.to(mean.dtype)

    def denormalize(self, latents: Tensor) -> Tensor:
        return latents * self.latents_std.to(latents.dtype) + self.latents_mean.to(latents.dtype)

    # ---- streaming steps -----------------------------------------------------------------
    def encode_step(
        self, video: Tensor, state: CausalState, *, skip_constant: bool = False
    ) -> tuple[tuple[Tensor, Tensor], CausalState]:
        """Continue an encoding stream: `video` [B, 3, n, H, W] -> raw (mean, logvar), new state.

        The stream's first step takes 1 + 4k frames, later steps 4k frames (k >= 0, for the
        Wan config), so every latent frame is complete when returned.
        """
        self.require("encoder")
        r = self.config.temporal_ratio
        n = video.shape[2]
        if state.frames_seen == 0 and n % r != 1 % r:
            raise ValueError(f"the first encode step takes 1 + {r}k frames, got {n}")
        if state.frames_seen > 0 and n % r != 0:
            raise ValueError(f"encode steps after the first take a multiple of {r} frames, got {n}")
        ctx = StepContext(state, skip_constant=skip_constant)
        return self._moments(self._encode_chunk(video, ctx), projected=True), ctx.result(n)

    def decode_step(self, latents: Tensor, state: CausalState) -> tuple[Tensor, CausalState]:
        """Continue a decoding stream: raw latents [B, z, t, h, w] -> pixels, new state.

        Unclamped. The stream's first latent frame gives one pixel frame, every later one
        gives four (for the Wan config).
        """
        self.require("decoder")
        ctx = StepContext(state)
        return self._decode_chunk(latents, ctx), ctx.result(latents.shape[2])

    def _encode_chunk(self, video: Tensor, ctx: StepContext) -> Tensor:
        """Pixels to conv1's projected moments [B, 2z, t, h, w]: one step, any caller's context."""
        return self.conv1(self.encoder(video, ctx)).contiguous()

    def _decode_chunk(self, z: Tensor, ctx: StepContext) -> Tensor:
        """Raw latents to unclamped pixels: one step, any caller's context."""
        return self.decoder(self.conv2(z), ctx).contiguous()

    def _moments(self, h: Tensor, projected: bool = False) -> tuple[Tensor, Tensor]:
        """(mean, logvar) from the encoder's output, or from conv1 of it when `projected`."""
        mean, logvar = (h if projected else self.conv1(h).contiguous()).chunk(2, dim=1)
        # The reference (diffusers' DiagonalGaussianDistribution) clamps here.
        return mean.contiguous(), logvar.clamp(-30.0, 20.0).contiguous()

    # ---- whole clips ----------------------------------------------------------------------
    def _chunk_frames(self, frames_bytes: int, multiple: int, tiled: bool = False) -> int:
        """Frames per time chunk so that one full-resolution activation stays near CHUNK_BYTES.

        Tiled passes take the shortest chunk: tiling is asked for to bound memory, and a
        smaller tile should then mean smaller activations, not longer chunks of the same size.
        """
        if tiled:
            return multiple
        return max(multiple, CHUNK_BYTES // max(frames_bytes, 1) // multiple * multiple)

    def _bytes_per_pixel(self) -> float:
        """Rough working set of a tile per pixel (causal state plus one chunk's activations)."""
        return 48 * max(self.config.encoder_width, self.config.decoder_width) * self.latents_mean.element_size()

    def _grid(self, tile: TileArg, height: int, width: int, part: str = "encoder") -> tiling.TileGrid | None:
        tile_px = tiling.parse_tile(tile, height, width, self._bytes_per_pixel(), self.device)
        if tile_px is None:
            return None
        if self.config.attn_scales:
            raise ValueError("tiling needs a spatially local down/up path: attn_scales must be empty")
        # The encoder's memory peaks at full resolution, where its tiles are their blocks; the
        # decoder's peaks at its output, which trails the blocks by the up path's lag.
        lag = round(self.decoder.up_lag() / self.config.spatial_ratio) if part == "decoder" else 0
        grid = tiling.plan(height, width, tile_px, self.config.spatial_ratio, lag)
        return grid if len(grid) > 1 else None

    def _tiled_pass(
        self, part: str, x: Tensor, grid: tiling.TileGrid, scale_in: int, chunks: list[slice], out_frames: int,
        out_hw: tuple[int, int], progress: TileProgress | None,
    ) -> Tensor:
        """The spatially local path of `part` (the encoder's down path, the decoder's up path)
        over a whole clip, tile-major or time-major, whichever holds less (see tiling.py)."""
        run = self.encoder.down if part == "encoder" else self.decoder.up
        bounds = tuple((c.start, c.stop) for c in chunks)
        order = tile_order(self.config, part, tuple(x.shape), x.dtype, grid, scale_in, bounds, out_hw)
        driver = tiling.time_major if order == "time" else tiling.tile_major
        return driver(run, x, grid, scale_in, chunks, out_frames, out_hw, progress)

    def _in_chunks(self, run, x: Tensor, chunks: list[slice]) -> Tensor:
        """`run` over the time chunks of `x` in order, one causal state carried through."""
        state, outs = CausalState(), []
        for i, frames in enumerate(chunks):
            # The context holds the only reference, so old histories go as they are used;
            # the last chunk keeps none (for an image, 5 full-size copies nobody would read).
            ctx, state = StepContext(state, record=i < len(chunks) - 1), None
            outs.append(run(x[:, :, frames], ctx))
            state = ctx.result(frames.stop - frames.start)
        return torch.cat(outs, dim=2)

    @torch.no_grad()
    def encode_moments(self, video: Tensor, *, tile: TileArg = None, progress: TileProgress | None = None) -> tuple[Tensor, Tensor]:
        """Raw (mean, logvar) [B, z, 1 + (T-1)/4, H/8, W/8] of a clip [B, 3, T, H, W] in [-1, 1].

        An image batch [B, 3, H, W] is taken as one-frame clips. `tile` (pixels: an int, a
        (w, h) pair, or 'auto') runs the down path tile by tile; the result is the same.
        `progress(tiles done, tiles)` is called after each tile of a tiled pass.
        """
        self.require("encoder")
        video = checks.check_video(video, self.config, self.part_dtype("encoder"))
        b, _, t, h, w = video.shape
        grid = self._grid(tile, h, w)
        r, s = self.config.temporal_ratio, self.config.spatial_ratio
        if grid is None:
            step = self._chunk_frames(int(b * self.config.encoder_width * h * w * video.element_size()), r)
            with reuse_heap(video.device.type == "cpu"):
                return self._moments(self._in_chunks(self._encode_chunk, video, frame_chunks(t, 1, step)), projected=True)
        area = max(grid.rows) * max(grid.cols) * s * s
        step = self._chunk_frames(int(b * self.config.encoder_width * area * video.element_size()), r, tiled=True)
        chunks = frame_chunks(t, 1, step)
        fmap = self._tiled_pass("encoder", video, grid, s, chunks, self.config.latent_frames(t), (h // s, w // s), progress)
        # The same time chunks at latent rate, so a tiled stream gives these very numbers.
        latent_chunks = frame_chunks(self.config.latent_frames(t), 1, step // r)
        return self._moments(self._in_chunks(self.encoder.mid_head, fmap, latent_chunks))

    @torch.no_grad()
    def encode(
        self, video: Tensor, *, sample: bool = False, generator: torch.Generator | None = None, tile: TileArg = None,
        progress: TileProgress | None = None,
    ) -> Tensor:
        """Normalised latents [B, 16, 1 + (T-1)/4, H/8, W/8] of a clip [B, 3, T, H, W] in [-1, 1].

        The normalised mean, as the reference returns; with `sample=True` a normalised
        draw from the posterior, noise drawn latent frame by latent frame in time order so
        a stream with the same generator draws the same sample.
        """
        mean, logvar = self.encode_moments(video, tile=tile, progress=progress)
        if sample:
            mean = sample_posterior(mean, logvar, generator)
        return self.normalize(mean)

    @torch.no_grad()
    def decode(
        self, latents: Tensor, *, clamp: bool = True, tile: TileArg = None, progress: TileProgress | None = None, raw: bool = False
    ) -> Tensor:
        """Pixels [B, 3, 1 + 4(t-1), 8h, 8w] from normalised latents [B, 16, t, h, w].

        Clamped to [-1, 1] like the reference's decode, unless `clamp=False`. `tile`
        (output pixels) runs the up path tile by tile; the result is the same. `raw=True`
        takes latents at the encoder's scale (its mean, not normalised), as diffusers'
        pipelines hand them to their VAE after undoing the normalisation themselves.
        """
        self.require("decoder")
        latents = checks.check_latents(latents, self.config, self.part_dtype("decoder"))
        z = latents if raw else self.denormalize(latents)
        b, _, t, h, w = z.shape
        s, r = self.config.spatial_ratio, self.config.temporal_ratio
        grid = self._grid(tile, h * s, w * s, part="decoder")
        if grid is None:
            step = self._chunk_frames(int(b * self.config.decoder_width * r * h * w * s * s * z.element_size()), 1)
            with reuse_heap(z.device.type == "cpu"):
                out = self._in_chunks(self._decode_chunk, z, frame_chunks(t, 1, step))
            return out.clamp_(-1.0, 1.0) if clamp else out
        # Middle block over the whole latent map, then the up path tile by tile.
        area = max(grid.rows) * max(grid.cols) * s * s
        chunks = frame_chunks(t, 1, self._chunk_frames(int(b * self.config.decoder_width * r * area * z.element_size()), 1, tiled=True))
        fmap = self._in_chunks(self.decoder.mid, self.conv2(z), chunks)
        out = self._tiled_pass("decoder", fmap, grid, 1, chunks, self.config.pixel_frames(t), (h * s, w * s), progress)
        return out.clamp_(-1.0, 1.0) if clamp else out

    @torch.no_grad()
    def encode_conditioning(
        self, first: Tensor, last: Tensor | None = None, num_frames: int = 81, *, return_steps: bool = False
    ) -> Tensor:
        """Latents of Wan's image-to-video conditioning clip: `first`, then zero frames (and
        `last` as the final frame for first-and-last-frame models): [B, 16, 1 + (F-1)/4, h, w].

        Equal to `encode` of that clip, much cheaper. After the first frame the input is
        constant, and a temporal layer whose whole window is one repeated frame gives that
        same frame at every step: it is computed once instead of per frame. Once a step
        leaves the causal state exactly as it found it, the remaining steps are copies.
        """
        (mean, _), steps = self._conditioning(first, last, num_frames)
        latents = self.normalize(mean)
        return (latents, steps) if return_steps else latents

    @torch.no_grad()
    def encode_conditioning_moments(self, first: Tensor, last: Tensor | None = None, num_frames: int = 81) -> tuple[Tensor, Tensor]:
        """Raw (mean, logvar) of the conditioning clip `encode_conditioning` describes:
        equal to `encode_moments` of that clip."""
        return self._conditioning(first, last, num_frames)[0]

    def _conditioning(self, first: Tensor, last: Tensor | None, num_frames: int) -> tuple[tuple[Tensor, Tensor], int]:
        self.require("encoder")
        dtype = self.part_dtype("encoder")
        first = checks.check_video(first, self.config, dtype)
        if first.shape[2] != 1:
            raise ValueError(f"first must be one frame, [B, 3, H, W] (or [B, 3, 1, H, W]); got {tuple(first.shape)}")
        r = self.config.temporal_ratio
        if num_frames < 1 or (num_frames - 1) % r:
            raise ValueError(checks.frame_count_error(num_frames, r))
        if last is not None:
            last = checks.check_video(last, self.config, dtype)
            if last.shape[2] != 1 or last.shape[0] != first.shape[0] or last.shape[3:] != first.shape[3:]:
                raise ValueError(f"last must be one frame shaped like first {tuple(first.shape)}; got {tuple(last.shape)}")
            if num_frames < 1 + r:
                raise ValueError(f"first-and-last conditioning needs at least {1 + r} frames, got {num_frames}")
        with reuse_heap(first.device.type == "cpu"):
            return self._conditioning_steps(first, last, num_frames)

    def _conditioning_steps(self, first: Tensor, last: Tensor | None, num_frames: int) -> tuple[tuple[Tensor, Tensor], int]:
        r = self.config.temporal_ratio
        moments, state = self.encode_step(first, CausalState())
        steps = [moments]
        blank = torch.zeros_like(first).expand(-1, -1, r, -1, -1).contiguous()
        chunks = (num_frames - 1) // r - (1 if last is not None else 0)
        computed = 1
        while len(steps) - 1 < chunks:
            moments, after = self.encode_step(blank, state, skip_constant=True)
            computed += 1
            steps.append(moments)
            if after.same_history(state):  # a fixed point: the remaining steps would all be this one
                steps.extend([moments] * (chunks - (len(steps) - 1)))
                break
            state = after
        if last is not None:
            tail = torch.cat([blank[:, :, : r - 1], last], dim=2)
            moments, _ = self.encode_step(tail, state, skip_constant=True)
            computed += 1
            steps.append(moments)
        mean = torch.cat([m for m, _ in steps], dim=2)
        logvar = torch.cat([lv for _, lv in steps], dim=2)
        return (mean, logvar), computed


# Below this many time chunks tile-major is taken unmeasured: a chunk's seams are strips a
# few positions wide per layer, against two frames of a whole tile per layer of state, so
# they cannot outgrow the other tiles' states that soon (Wan 2.1 at 448x256: ~11 chunks).
# The measurement costs the full model 1-2.5 s, and as much as the pass itself on tiny ones.
MEASURED_FROM_CHUNKS = 8


@functools.lru_cache(maxsize=64)
def tile_order(
    config: VAEConfig, part: str, shape: tuple[int, ...], dtype: torch.dtype, grid: tiling.TileGrid, scale_in: int,
    chunks: tuple[tuple[int, int], ...], out_hw: tuple[int, int],
) -> str:
    """'tile' or 'time': the order whose causal state plus seams peak lower on this plan.

    Measured on a meta-device twin (shapes only, no arithmetic) over the first chunks:
    time-major's peak is reached by the fourth chunk and stays; tile-major's seams grow by
    one chunk's worth per chunk, so its peak is extrapolated to the clip's length. At
    448x256 with two tiles, the Wan 2.1 decoder's seams pass its other tile's state at
    about 11 latent frames (27 MB a frame against 290 MB).
    """
    if len(chunks) < MEASURED_FROM_CHUNKS:
        return "tile"
    with torch.device("meta"):
        twin = WanVAE(config, parts=part).to(dtype)
    run = twin.encoder.down if part == "encoder" else twin.decoder.up
    x = torch.empty(shape, dtype=dtype, device="meta")
    peaks = {}
    with torch.no_grad():
        for name, driver, n in (("tile3", tiling.tile_major, 3), ("tile4", tiling.tile_major, 4), ("time", tiling.time_major, 4)):
            meter = [0]
            few = [slice(a, b) for a, b in chunks[:n]]
            frames = config.latent_frames(few[-1].stop) if part == "encoder" else config.pixel_frames(few[-1].stop)
            driver(run, x[:, :, : few[-1].stop], grid, scale_in, few, frames, out_hw, meter=meter)
            peaks[name] = meter[0]
    tile_peak = peaks["tile4"] + (len(chunks) - 4) * max(0, peaks["tile4"] - peaks["tile3"])
    return "time" if peaks["time"] < tile_peak else "tile"


def frame_chunks(frames: int, first: int, step: int) -> list[slice]:
    """The stream's steps over a whole clip: `first` frames, then `step` at a time."""
    chunks = [slice(0, min(first, frames))]
    chunks += [slice(start, min(start + step, frames)) for start in range(first, frames, step)]
    return chunks


def sample_posterior(mean: Tensor, logvar: Tensor, generator: torch.Generator | None) -> Tensor:
    """mean + std * eps, eps drawn one latent frame at a time in time order."""
    std = torch.exp(0.5 * logvar)
    frames = []
    for i in range(mean.shape[2]):
        eps = torch.randn(mean[:, :, i].shape, generator=generator, device=mean.device, dtype=mean.dtype)
        frames.append(mean[:, :, i] + std[:, :, i] * eps)
    return torch.stack(frames, dim=2)
