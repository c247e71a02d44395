"""Input validation: one clear message saying what is wrong and what would be valid."""

from __future__ import annotations

import torch
from torch import Tensor

from .config import VAEConfig

# Pixels are [-1, 1]; a little overshoot (from resampling filters) is harmless, 0..255 is not.
PIXEL_LIMIT = 1.5


def nearest_valid_frames(frames: int, ratio: int) -> tuple[int, int]:
    """The valid counts (1 + ratio*k) just below and just above `frames`."""
    below = 1 + (frames - 1) // ratio * ratio
    return below, below + ratio


def frame_count_error(frames: int, ratio: int) -> str:
    below, above = nearest_valid_frames(frames, ratio)
    return (
        f"got {frames} frames, but the encoder takes 1 + {ratio}k frames: use {below} or {above} "
        f"(trim or pad the clip; the reference would silently drop the last {frames - below})"
    )


def nearest_sizes(w: int, h: int, multiple: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The sizes (W, H) with both sides multiples of `multiple` just below and just above."""
    down = lambda v: max(multiple, v // multiple * multiple)  # noqa: E731
    up = lambda v: -(-v // multiple) * multiple  # noqa: E731
    return (down(w), down(h)), (up(w), up(h))


def size_error(w: int, h: int, multiple: int, family: str) -> str:
    (w0, h0), (w1, h1) = nearest_sizes(w, h, multiple)
    return (
        f"frame size {w}x{h} (W x H) is not a multiple of {multiple}: the {family} VAE's spatial factor; "
        f"crop or resize to {w0}x{h0}, or pad to {w1}x{h1}"
    )


# Latent channels of each released family, to name the family a latents tensor came from.
FAMILY_CHANNELS = {16: "Wan 2.1", 48: "Wan 2.2"}


def _check_float(x: Tensor, what: str) -> None:
    if not torch.is_floating_point(x):
        hint = " (for 0..255 pixels use x.float() / 127.5 - 1)" if what == "video" else ""
        raise ValueError(f"{what} must be a floating-point tensor, got dtype {x.dtype}{hint}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} contains NaN or infinite values")


def check_video(video: Tensor, cfg: VAEConfig, dtype: torch.dtype | None = None, *, whole_clip: bool = True) -> Tensor:
    """Validate pixels [B, 3, T, H, W] (or images [B, 3, H, W]) and return them as 5-D."""
    if not isinstance(video, Tensor):
        raise ValueError(f"video must be a torch.Tensor [B, 3, T, H, W], got {type(video).__name__}")
    given = tuple(video.shape)  # what the caller passed, for the messages
    c = cfg.image_channels
    if video.dim() == 4:
        if video.shape[1] != cfg.image_channels and video.shape[0] == cfg.image_channels:
            raise ValueError(
                f"video {given} reads as an image batch [B, {c}, H, W] with {video.shape[1]} channels; a clip [{c}, T, H, W] "
                f"needs its batch axis: x[None] gives [1, {c}, T, H, W]"
            )
        video = video.unsqueeze(2)  # an image batch: one-frame clips
    elif video.dim() == 3:
        raise ValueError(
            f"video has 3 dims {tuple(video.shape)}; expected [B, {c}, T, H, W] or an image batch "
            f"[B, {c}, H, W] (for one image add the batch axis: x[None])"
        )
    elif video.dim() != 5:
        raise ValueError(f"video must be [B, {c}, T, H, W] or [B, {c}, H, W], got {video.dim()} dims {tuple(video.shape)}")
    b, c, t, h, w = video.shape
    want = cfg.image_channels
    if c != want:
        hint = " (channels-last input? use x.permute(0, 4, 1, 2, 3))" if w == want else ""
        hint += " (drop alpha with x[:, :3], or composite it first)" if c == 4 and want == 3 else ""
        hint += " (this is an RGBA model: add an alpha plane, e.g. torch.ones_like(x[:, :1]))" if c == 3 and want == 4 else ""
        kind = {3: "RGB", 4: "RGBA"}.get(want, "image")
        raise ValueError(f"video must have {want} ({kind}) channels in dim 1, got {c} in shape {given}{hint}")
    if b == 0 or t == 0:
        raise ValueError(f"video is empty: shape {given}")
    s = cfg.spatial_ratio
    if h % s or w % s:
        raise ValueError(size_error(w, h, s, cfg.family))
    if whole_clip and (t - 1) % cfg.temporal_ratio:
        raise ValueError(frame_count_error(t, cfg.temporal_ratio))
    _check_float(video, "video")
    lo, hi = video.aminmax()
    if lo < -PIXEL_LIMIT or hi > PIXEL_LIMIT:
        raise ValueError(
            f"video values span [{lo.item():.4g}, {hi.item():.4g}] but pixels must be in [-1, 1] "
            "(0..255 input needs x / 127.5 - 1; 0..1 input needs x * 2 - 1)"
        )
    return video if dtype is None else video.to(dtype)


def latent_channels_error(channels: int, cfg: VAEConfig, shape: tuple | None = None) -> str:
    """Latents with the wrong channel count; names both families where it can."""
    came_from, decoder = FAMILY_CHANNELS.get(channels), FAMILY_CHANNELS.get(cfg.z_dim)
    where = f" in {shape}" if shape else ""
    if came_from and decoder and came_from != decoder:
        # A model of another architecture for the same latents says what it is (cfg.family).
        this = f"a {decoder} VAE" if cfg.family.startswith("Wan") else f"a {cfg.family}"
        return (
            f"these are {came_from} latents ({channels} channels{where}) but this is {this} "
            f"({cfg.z_dim} channels): decode them with a {came_from} checkpoint"
        )
    return f"latents must have {cfg.z_dim} channels in dim 1, got {channels}{where}"


def check_latents(latents: Tensor, cfg: VAEConfig, dtype: torch.dtype | None = None) -> Tensor:
    """Validate normalised latents [B, z, t, h, w]."""
    if not isinstance(latents, Tensor):
        raise ValueError(f"latents must be a torch.Tensor [B, {cfg.z_dim}, t, h, w], got {type(latents).__name__}")
    if latents.dim() == 4:
        raise ValueError(
            f"latents have 4 dims {tuple(latents.shape)}; expected [B, {cfg.z_dim}, t, h, w] "
            "(for one clip add the batch axis: latents[None])"
        )
    if latents.dim() != 5:
        raise ValueError(f"latents must be [B, {cfg.z_dim}, t, h, w], got {latents.dim()} dims {tuple(latents.shape)}")
    if latents.shape[1] != cfg.z_dim:
        raise ValueError(latent_channels_error(latents.shape[1], cfg, tuple(latents.shape)))
    if 0 in latents.shape:
        raise ValueError(f"latents are empty: shape {tuple(latents.shape)}")
    _check_float(latents, "latents")
    return latents if dtype is None else latents.to(dtype)
