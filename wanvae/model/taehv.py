"""The TAEHV tiny autoencoders (taew2_1, taew2_2, taew2_2_super, lighttae): a second, light
architecture for previews, over the same causal-state engine as the Wan VAEs.

madebyollin's TAEHV (MIT) is per-frame 2D: 3x3 convs, ReLU, and three kinds of time layer:
a `MemBlock` sees its own input at the previous time step (zeros at the first), a `TPool`
folds s consecutive frames into channels and back to its width (1x1 conv), a `TGrow` makes s
frames of one (1x1 conv, then the channel groups in time order). Attribute names are the
published files' keys (`encoder.4.conv.0.weight`, `decoder.13.conv.weight`), so they load
strictly. The `_super` decoder swaps the MemBlocks for ConvNeXt-style `SuperMemBlock`s and the
nearest up-sampling for a learned pixel shuffle. Written from the layer descriptions in shared/reference/neighbours.md and the
reference module's documented behaviour, not from its code.

wanvae's conventions hold at the boundary: frames [B, 3, T, H, W] in [-1, 1] (the reference
takes [0, 1]), latents [B, z, t, h, w] normalised as a Wan diffusion model sees them (the
`lighttae` files take the VAE's raw mean: converted here), 1 + 4k frames <-> 1 + k latents:
the encoder pads a clip's end with copies of its last frame to a multiple of 4 and makes one
latent per 4 frames; the decoder makes 4 frames per latent and drops the stream's first 3.

A step's history lives in the `coding.state.StepContext` under each layer's module path (a
MemBlock's last input frame), so whole clips and streams run the same `Stages` under the
same `PassPlan`, and any split of pushes equals one pass.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import checks
from ..coding.plan import PassPlan, Progress, Stages, chunk_frames, run_clip
from ..coding.state import StepContext
from ..config import PUBLISHED_STATS


@dataclass(frozen=True)
class TinyConfig:
    """What a TAEHV file is: read off its tensors' shapes (and, for `raw_latents`, its name)."""

    # Latent channels: 16 for Wan 2.1's latents (taew2_1, also Wan 2.2 A14B and Qwen-Image),
    # 48 for Wan 2.2 TI2V-5B's (taew2_2).
    z_dim: int = 16
    # Pixels folded into channels (pixel-unshuffle) around the network: 2 for taew2_2.
    patch_size: int = 1
    # Which of the encoder's three stages halve time (two of them: 4x), and which of the
    # decoder's double it and the space; a preview may turn the decoder's off (cheaper frames,
    # fewer of them or smaller: `preview()`).
    encoder_time: tuple[bool, ...] = (True, True, False)
    decoder_time: tuple[bool, ...] = (False, True, True)
    decoder_space: tuple[bool, ...] = (True, True, True)
    # LightX2V's lighttae files were trained on the VAE's raw mean, not the normalised latents.
    raw_latents: bool = False
    # The decoder's blocks: "base" (MemBlocks of 3x3 convs, nearest up-sampling), or "super"
    # (taew2_2_super: ConvNeXt-style blocks twice as wide, learned pixel-shuffle up-sampling).
    decoder_variant: str = "base"
    name: str = field(default="taew2_1", compare=False)

    @property
    def family(self) -> str:
        return "TAEHV tiny autoencoder for Wan 2.2 latents" if self.z_dim == 48 else "TAEHV tiny autoencoder for Wan 2.1 latents"

    @property
    def spatial_ratio(self) -> int:
        """Pixels per latent along H and W (8 for taew2_1, 16 for taew2_2), encoder side."""
        return self.patch_size * 8

    @property
    def temporal_ratio(self) -> int:
        return 2 ** sum(self.encoder_time)

    @property
    def decoded_spatial_ratio(self) -> int:
        return self.patch_size * 2 ** sum(self.decoder_space)

    @property
    def image_channels(self) -> int:
        """RGB: every published TAEHV file is."""
        return 3

    @property
    def decoded_temporal_ratio(self) -> int:
        return 2 ** sum(self.decoder_time)

    @property
    def pipeline_fps(self) -> float:
        return 24.0 if self.z_dim == 48 else 16.0

    @property
    def latents_mean(self) -> tuple[float, ...]:
        return PUBLISHED_STATS.get(self.z_dim, ((0.0,) * self.z_dim, None))[0]

    @property
    def latents_std(self) -> tuple[float, ...]:
        return PUBLISHED_STATS.get(self.z_dim, (None, (1.0,) * self.z_dim))[1]

    @property
    def encoder_width(self) -> float:
        return 64 / self.patch_size**2

    @property
    def decoder_width(self) -> float:
        return 64 / self.patch_size**2

    def latent_frames(self, frames: int) -> int:
        return 1 + (frames - 1) // self.temporal_ratio

    def pixel_frames(self, latent_frames: int) -> int:
        r = self.decoded_temporal_ratio
        return r * latent_frames - (r - 1)


def _conv(n_in: int, n_out: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1, bias=bias)


def _frames(x: Tensor) -> Tensor:
    """[B, C, T, H, W] -> [B*T, C, H, W], time-major within each sample."""
    b, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(b * t, c, h, w)


def _clip(x: Tensor, b: int) -> Tensor:
    """The inverse of `_frames`."""
    bt, c, h, w = x.shape
    return x.view(b, bt // b, c, h, w).transpose(1, 2)


class TimeLayer(nn.Module):
    """A layer that sees time: it is given the frames of one sample-batch step as [B, C, T, H, W]."""

    state_key: str = ""


class Clamp(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x / 3) * 3


class MemBlock(TimeLayer):
    """ReLU(conv(ReLU(conv(ReLU(conv([x, past]))))) + skip(x)); `past` is this block's input one
    frame earlier (zeros before the stream's first frame), kept in the step's state."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv(2 * n_in, n_out), nn.ReLU(inplace=True), _conv(n_out, n_out), nn.ReLU(inplace=True), _conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor, ctx: StepContext) -> Tensor:  # [B, C, T, H, W]
        last = ctx.history(self.state_key)
        first = torch.zeros_like(x[:, :, :1]) if last is None else last
        past = torch.cat([first, x[:, :, :-1]], dim=2)
        ctx.keep(self.state_key, x[:, :, -1:].clone())
        b = x.shape[0]
        y = self.conv(torch.cat([_frames(x), _frames(past)], dim=1))
        del past
        return _clip(self.act(y.add_(self.skip(_frames(x)))), b)


class SuperMemBlock(TimeLayer):
    """The super decoder's block: x + pw(ReLU(pw(dw7x7([x, past])))), a ConvNeXt-style inverted
    bottleneck (depthwise 7x7 over the frame and its past, 1x1 to 4n with a bias, ReLU, 1x1
    back to n); no activation after the sum. `past` as in `MemBlock`."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(2 * n, 2 * n, 7, padding=3, groups=2 * n, bias=False),
            nn.Conv2d(2 * n, 4 * n, 1), nn.ReLU(inplace=True),
            nn.Conv2d(4 * n, n, 1, bias=False),
        )

    def forward(self, x: Tensor, ctx: StepContext) -> Tensor:  # [B, C, T, H, W]
        last = ctx.history(self.state_key)
        first = torch.zeros_like(x[:, :, :1]) if last is None else last
        past = torch.cat([first, x[:, :, :-1]], dim=2)
        ctx.keep(self.state_key, x[:, :, -1:].clone())
        b = x.shape[0]
        y = self.conv(torch.cat([_frames(x), _frames(past)], dim=1))
        del past
        return _clip(y.add_(_frames(x)), b)


class TPool(TimeLayer):
    """s consecutive frames' channels side by side (the earliest first), 1x1 conv back to n."""

    def __init__(self, n: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n * stride, n, 1, bias=False)

    def forward(self, x: Tensor, ctx: StepContext) -> Tensor:
        b, c, t, h, w = x.shape
        if t % self.stride:  # the plan's chunks are whole multiples of 4 frames (the end padded)
            raise ValueError(f"a TPool of stride {self.stride} got {t} frames")
        folded = x.transpose(1, 2).reshape(b * t // self.stride, self.stride * c, h, w)
        return _clip(self.conv(folded), b)


class TGrow(TimeLayer):
    """1x1 conv to s x n channels, split into s frames in time order."""

    def __init__(self, n: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n, n * stride, 1, bias=False)

    def forward(self, x: Tensor, ctx: StepContext) -> Tensor:
        b, c, t, h, w = x.shape
        y = self.conv(_frames(x))  # [B*T, s*C, H, W]
        return y.view(b, t * self.stride, c, h, w).transpose(1, 2)


def _encoder(cfg: TinyConfig) -> nn.Sequential:
    p = cfg.patch_size
    layers: list[nn.Module] = [_conv(3 * p * p, 64), nn.ReLU(inplace=True)]
    for halves in cfg.encoder_time:
        layers += [TPool(64, 2 if halves else 1), _conv(64, 64, stride=2, bias=False), MemBlock(64, 64), MemBlock(64, 64), MemBlock(64, 64)]
    layers.append(_conv(64, cfg.z_dim))
    return nn.Sequential(*layers)


def _decoder(cfg: TinyConfig) -> nn.Sequential:
    if cfg.decoder_variant == "super":
        return _super_decoder(cfg)
    widths = (256, 128, 64, 64)
    layers: list[nn.Module] = [Clamp(), _conv(cfg.z_dim, widths[0]), nn.ReLU(inplace=True)]
    for i, (doubles_time, doubles_space) in enumerate(zip(cfg.decoder_time, cfg.decoder_space)):
        n = widths[i]
        layers += [MemBlock(n, n), MemBlock(n, n), MemBlock(n, n), nn.Upsample(scale_factor=2 if doubles_space else 1),
                   TGrow(n, 2 if doubles_time else 1), _conv(n, widths[i + 1], bias=False)]
    layers += [nn.ReLU(inplace=True), _conv(widths[3], 3 * cfg.patch_size**2)]
    return nn.Sequential(*layers)


def _super_decoder(cfg: TinyConfig) -> nn.Sequential:
    """No clamp in front, a 1x1 conv in; each stage three SuperMemBlocks, a 3x3 conv to s^2
    times the next width, ReLU, a pixel shuffle by s, a TGrow; a 3x3 conv out."""
    widths = (512, 256, 128, 64)
    layers: list[nn.Module] = [nn.Conv2d(cfg.z_dim, widths[0], 1, bias=False)]
    for i, (doubles_time, doubles_space) in enumerate(zip(cfg.decoder_time, cfg.decoder_space)):
        n, s = widths[i], 2 if doubles_space else 1
        layers += [SuperMemBlock(n), SuperMemBlock(n), SuperMemBlock(n), _conv(n, widths[i + 1] * s * s), nn.ReLU(inplace=True),
                   nn.PixelShuffle(s), TGrow(widths[i + 1], 2 if doubles_time else 1)]
    layers.append(_conv(widths[3], 3 * cfg.patch_size**2))
    return nn.Sequential(*layers)


def _run(layers, x: Tensor, ctx: StepContext) -> Tensor:
    """`layers` over the frames of x [B, C, T, H, W]; 2D layers frame by frame in one batch."""
    for layer in layers:
        if isinstance(layer, TimeLayer):
            x = layer(x, ctx)
        else:
            b = x.shape[0]
            x = _clip(layer(_frames(x).contiguous()), b)
    return x


class TinyVAE(nn.Module):
    """A TAEHV model with wanvae's conventions (see the module docstring). Parameter names are
    the published files' keys."""

    # Nothing to tile: an explicit tile size is refused, and adapters leave tiling off.
    tiles = False

    def __init__(self, config: TinyConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or TinyConfig()
        self.parts = "all"
        self.encoder = _encoder(config)
        self.decoder = _decoder(config)
        # After the decoder's last memory block nothing looks at other frames, and everything is
        # at full resolution: that tail runs one frame at a time (the 4 frames of 64 channels a
        # latent makes at 832x480 are 400 MB per tensor).
        self._tail = max(i for i, m in enumerate(self.decoder) if isinstance(m, (MemBlock, SuperMemBlock))) + 1
        self._grow = next(i for i in range(self._tail, len(self.decoder)) if isinstance(self.decoder[i], TGrow))
        for name, module in self.named_modules():
            if isinstance(module, TimeLayer):
                module.state_key = name

    # ---- what the drivers and streams use (coding.plan.Coder) -------------------------------
    @property
    def device(self) -> torch.device:
        return self.encoder[0].weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder[0].weight.dtype

    def part_dtype(self, part: str) -> torch.dtype:
        return next(getattr(self, part).parameters()).dtype

    def require(self, part: str) -> None:
        if part not in ("encoder", "decoder"):
            raise ValueError(f"part must be 'encoder' or 'decoder', got {part!r}")

    def stages(self, part: str) -> Stages:
        cfg = self.config
        if part == "encoder":
            return Stages(local=self._encode_step, scale_in=cfg.spatial_ratio, frames_out=cfg.latent_frames)
        return Stages(local=self._decode_step, scale_in=1, scale_out=cfg.decoded_spatial_ratio, frames_out=cfg.pixel_frames)

    def plan(self, part: str, shape: tuple[int, ...], tile=None) -> PassPlan:
        """Whole frames always (each layer is a 3x3 conv of 64-256 channels: a frame of 720p
        is a few hundred MB at most); chunks of 4 frames (the encoder's time fold) or of
        latent frames sized to the activation budget."""
        if tile not in (None, "auto", "none"):
            raise ValueError("the TAEHV models run whole frames: tile must be None or 'auto' (nothing to tile: a "
                             f"frame's activations are a few hundred MB at 720p), got {tile!r}")
        b, _, _, h, w = shape
        r, itemsize = self.config.temporal_ratio, self.part_dtype(part).itemsize
        if part == "encoder":
            step = chunk_frames(int(b * 64 * h * w * itemsize), r)
            return PassPlan(None, step, first=r)
        s = self.config.decoded_spatial_ratio
        # The biggest map a latent makes is at half the output size: 2 frames x 128 channels
        # (the super decoder's, twice as wide, 512 before its last pixel shuffle).
        width = 512 if self.config.decoder_variant == "super" else 128
        return PassPlan(None, chunk_frames(int(b * width * 2 * h * w * s * s // 4 * itemsize), 1))

    def latents_from(self, moments: Tensor, *, sample: bool = False, generator: torch.Generator | None = None) -> Tensor:
        if sample:
            raise ValueError("a TAEHV encoder is deterministic: it has no posterior to sample (sample=False)")
        return self.normalize(moments) if self.config.raw_latents else moments

    def normalize(self, mean: Tensor) -> Tensor:
        shape = (1, -1, 1, 1, 1)
        m = torch.tensor(self.config.latents_mean, dtype=mean.dtype, device=mean.device).view(shape)
        s = torch.tensor(self.config.latents_std, dtype=mean.dtype, device=mean.device).view(shape)
        return (mean - m) / s

    def denormalize(self, latents: Tensor) -> Tensor:
        """What the decoder takes: the latents as they are, or raw for a lighttae file."""
        return self.denormalize_stats(latents) if self.config.raw_latents else latents

    # ---- the steps ----------------------------------------------------------------------------
    def _encode_step(self, x: Tensor, ctx: StepContext) -> Tensor:
        """Pixels [B, 3, n, H, W] in [-1, 1] -> latents [B, z, ceil(n/4), h, w]; a chunk that is
        not a whole number of 4-frame groups (the clip's end) is padded with its last frame."""
        r = self.config.temporal_ratio
        if x.shape[2] % r:
            x = torch.cat([x, x[:, :, -1:].expand(-1, -1, r - x.shape[2] % r, -1, -1)], dim=2)
        x = (x + 1) / 2
        p = self.config.patch_size
        if p > 1:
            x = _clip(F.pixel_unshuffle(_frames(x), p), x.shape[0])
        return _run(self.encoder, x, ctx)

    def _decode_step(self, z: Tensor, ctx: StepContext) -> Tensor:
        """Latents [B, z, n, h, w] (as the decoder takes them) -> pixels in [-1, 1], clamped;
        the stream's first step drops the frames before its first real one."""
        at_start = ctx.at_start
        x = _run(self.decoder[: self._tail], z, ctx)
        p = self.config.patch_size
        out = []
        for t in range(x.shape[2]):
            for y in self._tail_frames(x[:, :, t]):
                if p > 1:
                    y = F.pixel_shuffle(y, p)
                out.append(y.clamp_(0, 1).mul_(2).sub_(1).unsqueeze(2))
        del x
        y = torch.cat(out, dim=2)
        trim = self.config.decoded_temporal_ratio - 1
        return y[:, :, trim:] if at_start else y

    def _tail_frames(self, x: Tensor):
        """The layers after the last MemBlock (up-sample, TGrow, conv, ReLU, conv) for one frame
        [B, C, h, w], one output frame at a time. A 1x1 conv commutes with a nearest
        up-sampling, and each frame a TGrow makes is its own slice of the weight: so each
        output frame's channels are made at the lower size and then up-sampled. The same
        arithmetic per pixel, and a 480p decode's peak is one full-size frame, not two."""
        pre = list(self.decoder[self._tail : self._grow])
        grow, rest = self.decoder[self._grow], list(self.decoder[self._grow + 1 :])
        # The base decoder's nearest up-sampling commutes with the TGrow's 1x1 conv, so it runs
        # after it, per output frame; the super decoder's learned up-sampling runs first.
        commutes = len(pre) == 1 and isinstance(pre[0], nn.Upsample)
        if not commutes:
            for layer in pre:
                x = layer(x)
        weight, c = grow.conv.weight, x.shape[1]
        for j in range(grow.stride):
            y = F.conv2d(x, weight[j * c : (j + 1) * c])
            if commutes:
                y = pre[0](y)
            for layer in rest:
                y = layer(y)
            yield y

    # ---- whole clips -------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, video: Tensor, *, sample: bool = False, generator: torch.Generator | None = None, tile=None,
               progress: Progress | None = None) -> Tensor:
        """Normalised latents [B, z, 1 + (T-1)/4, H/8, W/8] of a clip [B, 3, T, H, W] in [-1, 1]."""
        video = checks.check_video(video, self.config, self.part_dtype("encoder"))
        moments = run_clip(self.stages("encoder"), self.plan("encoder", tuple(video.shape), tile), video, progress)
        return self.latents_from(moments, sample=sample)

    @torch.no_grad()
    def decode(self, latents: Tensor, *, clamp: bool = True, tile=None, progress: Progress | None = None, raw: bool = False) -> Tensor:
        """Pixels [B, 3, 1 + 4(t-1), 8h, 8w] in [-1, 1] from normalised latents [B, z, t, h, w]
        (`raw=True`: the VAE's raw mean, as diffusers' pipelines hand latents over)."""
        latents = checks.check_latents(latents, self.config, self.part_dtype("decoder"))
        if raw and not self.config.raw_latents:
            latents = self.normalize(latents)
        z = latents if raw and self.config.raw_latents else self.denormalize(latents)
        return run_clip(self.stages("decoder"), self.plan("decoder", tuple(z.shape), tile), z, progress)

    def compile(self, **options) -> TinyVAE:
        """Refused in words: torch's own Module.compile would compile a forward no call runs."""
        raise ValueError("--compile: the TAEHV models run eagerly (their time is in plain 2D convs, already vendor kernels)")

    def cast(self, part: str, dtype: torch.dtype) -> TinyVAE:
        """Run `part` in `dtype` (the other part as it is). Returns self."""
        self.require(part)
        getattr(self, part).to(dtype)
        return self

    def stream_state_nbytes(self, part: str, height: int, width: int, batch: int = 1) -> int:
        """Bytes of state a stream of `part` keeps at this frame size (pixels): every MemBlock's
        last input frame. Worked out on a meta-device twin (shapes only)."""
        from ..coding.state import CausalState

        with torch.device("meta"):
            twin = TinyVAE(self.config)
        cfg = self.config
        if part == "encoder":
            x = torch.empty(batch, 3, cfg.temporal_ratio, height, width, device="meta")
        else:
            s = cfg.decoded_spatial_ratio
            x = torch.empty(batch, cfg.z_dim, 1, height // s, width // s, device="meta")
        ctx = StepContext(CausalState())
        with torch.no_grad():
            twin.stages(part).whole(x, ctx)
        return ctx.result(x.shape[2]).nbytes // 4 * torch.empty(0, dtype=self.part_dtype(part)).element_size()

    @torch.no_grad()
    def encode_moments(self, video: Tensor, *, tile=None, progress: Progress | None = None) -> tuple[Tensor, Tensor]:
        """(raw mean, logvar) as a Wan VAE gives them: the encoder is deterministic, so the
        logvar is the reference posterior's floor (-30, a std of 3e-7) and a sample is the mean."""
        mean = self.denormalize_stats(self.encode(video, tile=tile, progress=progress))
        return mean, torch.full_like(mean, -30.0)

    @torch.no_grad()
    def encode_conditioning_moments(self, first: Tensor, last: Tensor | None = None, num_frames: int = 81) -> tuple[Tensor, Tensor]:
        """The moments of Wan's image-to-video conditioning clip (`first`, zeros, `last`), encoded as a clip."""
        first = checks.check_video(first, self.config, self.part_dtype("encoder"))
        clip = torch.zeros(*first.shape[:2], num_frames, *first.shape[3:], dtype=first.dtype, device=first.device)
        clip[:, :, :1] = first
        if last is not None:
            clip[:, :, -1:] = checks.check_video(last, self.config, self.part_dtype("encoder"))
        return self.encode_moments(clip)

    def denormalize_stats(self, latents: Tensor) -> Tensor:
        """Normalised latents back to the VAE's raw mean (the published statistics)."""
        shape = (1, -1, 1, 1, 1)
        m = torch.tensor(self.config.latents_mean, dtype=latents.dtype, device=latents.device).view(shape)
        s = torch.tensor(self.config.latents_std, dtype=latents.dtype, device=latents.device).view(shape)
        return latents * s + m

    def preview(self, *, time: bool = True, space: bool = True) -> TinyVAE:
        """A cheaper decoder sharing these weights: without the decoder's time up-sampling
        (`time=False`: one frame per latent, the latent's last), or its last space up-sampling
        (`space=False`: frames at half the size). What it gives up is said in the docs."""
        cfg = self.config
        if not space and cfg.decoder_variant == "super":
            raise ValueError("--skip-upscale space: the super decoder up-samples with a learned pixel shuffle whose weights "
                             "make 4 sub-pixels each; only --skip-upscale time has a cheaper form")
        decoder_time = cfg.decoder_time if time else (False,) * len(cfg.decoder_time)
        decoder_space = cfg.decoder_space if space else (*cfg.decoder_space[:-1], False)
        twin = TinyVAE(dataclasses.replace(cfg, decoder_time=decoder_time, decoder_space=decoder_space, name=cfg.name + "-preview"))
        state = patch_tgrow(self.state_dict(), twin.state_dict())
        twin.load_state_dict(state)
        return twin.to(self.device, self.dtype).eval()


def patch_tgrow(state: dict[str, Tensor], target: dict[str, Tensor]) -> dict[str, Tensor]:
    """A published TGrow weight with more output channels than the layer makes (a model built
    with fewer time up-samplings) keeps its LAST block of channels: the last frame of each
    group, as the reference does."""
    out = dict(state)
    for key, want in target.items():
        have = out.get(key)
        if have is not None and key.endswith(".conv.weight") and have.dim() == 4 and have.shape[0] > want.shape[0] \
                and have.shape[1:] == want.shape[1:] and have.shape[0] % want.shape[0] == 0:
            out[key] = have[-want.shape[0]:]
    return out
