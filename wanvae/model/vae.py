"""Encoder3d, Decoder3d and WanVAE: the Wan causal video VAEs (2.1 and 2.2, one code path).

Two ways through the same layers: `encode`/`decode` take a whole clip, and
`encode_step`/`decode_step` continue a stream from an explicit `CausalState`. The whole-clip
calls are built from the steps, so they cannot disagree.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
from torch import Tensor, nn

from .. import checks
from ..coding import tiling
from ..coding.heap import release
from ..coding.plan import PassPlan, Progress, Stages, chunk_frames, run_clip
from ..coding.state import CausalState, StepContext
from ..coding.tiling import TileArg, TileGrid
from ..config import VAEConfig
from .conditioning import conditioning_moments
from .kernels import EAGER, compiled_kernels
from .layers import (
    AttentionBlock,
    AvgDown3d,
    CausalConv3d,
    DownLevel,
    DupUp3d,
    PointwiseConv3d,
    Resample,
    ResidualBlock,
    RMSNorm,
    StatefulLayer,
    UpLevel,
    patchify,
    pixel_shuffle_frames,
    unpatchify,
)
from .routes import to_layout


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
        self.head = nn.Sequential(RMSNorm(dims[-1]), nn.SiLU(), CausalConv3d(dims[-1], cfg.out_channels, (3, 3, 3), 1))
        self.upscale = cfg.upscale

    def mid(self, x: Tensor, ctx: StepContext) -> Tensor:
        """Latents [B, z_dim, t, h, w] to the decoder's latent-scale map; the attention sees it whole."""
        x = self.conv1(to_layout(x), ctx)
        for layer in self.middle:
            x = layer(x, ctx)
        return x

    def up(self, x: Tensor, ctx: StepContext) -> Tensor:
        """The latent-scale map to pixels [B, C, T, H, W] (H, W times an upscaling head's
        factor); spatially local."""
        x = to_layout(x)
        for layer in self.upsamples:
            x = layer(x, ctx)
        return pixel_shuffle_frames(unpatchify(self.head[2](x, ctx, pre=self.head[0]), self.patch_size), self.upscale)

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
                    x = torch.empty(batch, self.config.image_channels, frames, height, width, device="meta")
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

    def split_moments(self, moments: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, logvar) from the projected moments [B, 2z, t, h, w] the encoder's stages give."""
        mean, logvar = moments.chunk(2, dim=1)
        # The reference (diffusers' DiagonalGaussianDistribution) clamps here.
        return mean.contiguous(), logvar.clamp(-30.0, 20.0).contiguous()

    def latents_from(self, moments: Tensor, *, sample: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """Normalised latents from projected moments: the mean, or with `sample=True` a draw
        from the posterior (noise drawn latent frame by latent frame, so a stream with the
        same generator draws the same sample)."""
        mean, logvar = self.split_moments(moments)
        if sample:
            mean = sample_posterior(mean, logvar, generator)
        return self.normalize(mean)

    # ---- how each part runs: its stages, and the plan for an input shape -----------------
    def stages(self, part: str) -> Stages:
        """`part` ('encoder' or 'decoder') as the drivers of `coding.plan` run it.

        The encoder's down path is spatially local (pixels to the 1/8 map), its middle
        block's attention and head see whole frames; the decoder mirrors it. Both end
        through their 1x1 convs, so a step gives projected moments or raw pixels.
        """
        self.require(part)
        s = self.config.spatial_ratio
        if part == "encoder":
            enc = self.encoder
            return Stages(
                local=enc.down, post=lambda h, ctx: self.conv1(enc.mid_head(h, ctx)),
                scale_in=s, scale_out=1, frames_out=self.config.latent_frames,
            )
        dec = self.decoder
        return Stages(
            local=dec.up, pre=lambda z, ctx: dec.mid(self.conv2(z), ctx),
            scale_in=1, scale_out=self.config.decoded_spatial_ratio, frames_out=self.config.pixel_frames,
        )

    def plan(self, part: str, shape: tuple[int, ...], tile: TileArg = None) -> PassPlan:
        """How `part` runs over an input of `shape` [B, C, T, H, W] (pixels for the encoder,
        latents for the decoder): the tile grid (`tile` in pixels, 'auto' or None) and the
        time chunks. Whole clips and streams both follow it.

        A tile spans at least `tiling.MIN_TILE_LATENTS` latent positions a side (128 px for
        Wan 2.1, 256 for Wan 2.2, in output pixels: twice that for a 2x upscaling decoder): a
        smaller `tile` is rounded up to that (the command line refuses it instead), and a
        frame no bigger than one tile is not tiled."""
        self.require(part)
        cfg = self.config
        b, _, t, h, w = shape
        s, r = cfg.spatial_ratio, cfg.temporal_ratio
        height, width = (h, w) if part == "encoder" else (h * s, w * s)
        grid = self._grid(tile, height, width, part)
        area = height * width if grid is None else max(grid.rows) * max(grid.cols) * s * s
        itemsize = self.part_dtype(part).itemsize
        if part == "encoder":
            step = chunk_frames(int(b * cfg.encoder_width * area * itemsize), r, tiled=grid is not None)
        else:
            step = chunk_frames(int(b * cfg.decoder_width * r * area * itemsize), 1, tiled=grid is not None)
        plan = PassPlan(grid, step)
        if grid is not None and t:
            order = tile_order(cfg, part, tuple(shape), self.part_dtype(part), grid, tuple((c.start, c.stop) for c in plan.chunks(t)))
            plan = dataclasses.replace(plan, order=order)
        return plan

    def _grid(self, tile: TileArg, height: int, width: int, part: str) -> TileGrid | None:
        tile_px = tiling.parse_tile(tile, height, width, self._bytes_per_pixel(), self.device)
        if tile_px is None:
            return None
        u = self.config.upscale
        if part == "decoder" and u > 1 and not isinstance(tile, str):
            # A tile is in output pixels; an upscaling head makes u of them per pixel the grid counts.
            tile_px = (-(-tile_px[0] // u), -(-tile_px[1] // u))
        if self.config.attn_scales:
            raise ValueError("tiling needs a spatially local down/up path: attn_scales must be empty")
        # The encoder's memory peaks at full resolution, where its tiles are their blocks; the
        # decoder's peaks at its output, which trails the blocks by the up path's lag.
        lag = round(self.decoder.up_lag() / self.config.spatial_ratio) if part == "decoder" else 0
        grid = tiling.plan(height, width, tile_px, self.config.spatial_ratio, lag)
        return grid if len(grid) > 1 else None

    def _bytes_per_pixel(self) -> float:
        """Rough working set of a tile per pixel (causal state plus one chunk's activations)."""
        return 48 * max(self.config.encoder_width, self.config.decoder_width) * self.latents_mean.element_size()

    # ---- streaming steps -----------------------------------------------------------------
    def encode_step(
        self, video: Tensor, state: CausalState, *, skip_constant: bool = False
    ) -> tuple[tuple[Tensor, Tensor], CausalState]:
        """Continue an encoding stream: `video` [B, 3, n, H, W] -> raw (mean, logvar), new state.

        The stream's first step takes 1 + 4k frames, later steps 4k frames (k >= 0, for the
        Wan config), so every latent frame is complete when returned.
        """
        stages = self.stages("encoder")
        r = self.config.temporal_ratio
        n = video.shape[2]
        if state.frames_seen == 0 and n % r != 1 % r:
            raise ValueError(f"the first encode step takes 1 + {r}k frames, got {n}")
        if state.frames_seen > 0 and n % r != 0:
            raise ValueError(f"encode steps after the first take a multiple of {r} frames, got {n}")
        ctx = StepContext(state, skip_constant=skip_constant, on_layer=release)
        return self.split_moments(stages.whole(video, ctx).contiguous()), ctx.result(n)

    def decode_step(self, latents: Tensor, state: CausalState) -> tuple[Tensor, CausalState]:
        """Continue a decoding stream: raw latents [B, z, t, h, w] -> pixels, new state.

        Unclamped. The stream's first latent frame gives one pixel frame, every later one
        gives four (for the Wan config).
        """
        stages = self.stages("decoder")
        ctx = StepContext(state, on_layer=release)
        return stages.whole(latents, ctx).contiguous(), ctx.result(latents.shape[2])

    # ---- whole clips ----------------------------------------------------------------------
    @torch.no_grad()
    def encode_moments(self, video: Tensor, *, tile: TileArg = None, progress: Progress | None = None) -> tuple[Tensor, Tensor]:
        """Raw (mean, logvar) [B, z, 1 + (T-1)/4, H/8, W/8] of a clip [B, 3, T, H, W] in [-1, 1].

        An image batch [B, 3, H, W] is taken as one-frame clips. `tile` (pixels: an int, a
        (w, h) pair, or 'auto') runs the down path tile by tile; the result is the same.
        `progress(tiles done, tiles)` is called after each tile of a tiled pass.
        """
        self.require("encoder")
        video = checks.check_video(video, self.config, self.part_dtype("encoder"))
        plan = self.plan("encoder", tuple(video.shape), tile)
        return self.split_moments(run_clip(self.stages("encoder"), plan, video, progress))

    @torch.no_grad()
    def encode(
        self, video: Tensor, *, sample: bool = False, generator: torch.Generator | None = None, tile: TileArg = None,
        progress: Progress | None = None,
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
        self, latents: Tensor, *, clamp: bool = True, tile: TileArg = None, progress: Progress | None = None, raw: bool = False
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
        out = run_clip(self.stages("decoder"), self.plan("decoder", tuple(z.shape), tile), z, progress)
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
        (mean, _), steps = conditioning_moments(self, first, last, num_frames)
        latents = self.normalize(mean)
        return (latents, steps) if return_steps else latents

    @torch.no_grad()
    def encode_conditioning_moments(self, first: Tensor, last: Tensor | None = None, num_frames: int = 81) -> tuple[Tensor, Tensor]:
        """Raw (mean, logvar) of the conditioning clip `encode_conditioning` describes:
        equal to `encode_moments` of that clip."""
        return conditioning_moments(self, first, last, num_frames)[0]


# Below this many time chunks tile-major is taken unmeasured: a chunk's seams are strips a
# few positions wide per layer, against two frames of a whole tile per layer of state, so
# they cannot outgrow the other tiles' states that soon (Wan 2.1 at 448x256: ~11 chunks).
# The measurement costs the full model 1-2.5 s, and as much as the pass itself on tiny ones.
MEASURED_FROM_CHUNKS = 8


@functools.lru_cache(maxsize=64)
def tile_order(
    config: VAEConfig, part: str, shape: tuple[int, ...], dtype: torch.dtype, grid: TileGrid, chunks: tuple[tuple[int, int], ...]
) -> str:
    """'tile' or 'time': the order whose causal state plus seams peak lower for a whole clip
    of `shape` (the part's input) on this grid and these chunks.

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
    stages = twin.stages(part)
    x = torch.empty(shape, dtype=dtype, device="meta")
    with torch.no_grad():
        if stages.pre is not None:  # the local stage's input, as a whole clip would hand it on
            x = stages.pre(x, StepContext(CausalState(), record=False))
    out_hw = (sum(grid.rows) * stages.scale_out, sum(grid.cols) * stages.scale_out)
    peaks = {}
    with torch.no_grad():
        for name, driver, n in (("tile3", tiling.tile_major, 3), ("tile4", tiling.tile_major, 4), ("time", tiling.time_major, 4)):
            meter = [0]
            few = [slice(a, b) for a, b in chunks[:n]]
            driver(stages.local, x[:, :, : few[-1].stop], grid, stages.scale_in, few, stages.frames_out(few[-1].stop), out_hw, meter=meter)
            peaks[name] = meter[0]
    tile_peak = peaks["tile4"] + (len(chunks) - 4) * max(0, peaks["tile4"] - peaks["tile3"])
    return "time" if peaks["time"] < tile_peak else "tile"


def sample_posterior(mean: Tensor, logvar: Tensor, generator: torch.Generator | None) -> Tensor:
    """mean + std * eps, eps drawn one latent frame at a time in time order."""
    std = torch.exp(0.5 * logvar)
    frames = []
    for i in range(mean.shape[2]):
        eps = torch.randn(mean[:, :, i].shape, generator=generator, device=mean.device, dtype=mean.dtype)
        frames.append(mean[:, :, i] + std[:, :, i] * eps)
    return torch.stack(frames, dim=2)
