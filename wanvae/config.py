"""Hyper-parameters of the Wan video VAEs (2.1 and 2.2), as one frozen value.

A model family is configuration over the same blocks: Wan 2.2 is Wan 2.1 with a 2x2
patchify around the network, parameter-free shortcuts around each resolution level,
up-samplers that keep their width, other widths and 48 latent channels.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

# Per-channel statistics of Wan 2.1 latents. The diffusion transformer was trained on
# (mu - mean) / std, so every Wan pipeline normalises with exactly these numbers.
WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip
# The same for Wan 2.2's 48 channels (Wan2.2-TI2V-5B's transformer was trained on these).
WAN22_LATENTS_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)  # fmt: skip
WAN22_LATENTS_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)  # fmt: skip
# Published statistics by latent channel count: a .pth has no metadata, so a checkpoint
# recognised by its shapes gets its family's numbers from here.
PUBLISHED_STATS = {16: (WAN21_LATENTS_MEAN, WAN21_LATENTS_STD), 48: (WAN22_LATENTS_MEAN, WAN22_LATENTS_STD)}


@dataclass(frozen=True)
class VAEConfig:
    # 96 is what every released Wan 2.1 / SkyReels-V2 checkpoint uses; tests shrink it.
    dim: int = 96
    # 16 latent channels: the layout Wan's transformer consumes. The encoder emits 2*z_dim
    # channels (mean and log-variance).
    z_dim: int = 16
    # One entry per resolution level; len(dim_mult) - 1 levels halve the size, giving 8x.
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    # Scales (1.0, 0.5, ...) that get an attention block inside the down/up path. Wan 2.1
    # uses none: attention lives only in the middle blocks, which is what makes the
    # encoder spatially local and exact tiling possible.
    attn_scales: tuple[float, ...] = ()
    # Which down-sampling levels also halve time. Two of three gives the 4x temporal
    # compression (1 + 4k frames -> 1 + k latents); the decoder mirrors it reversed.
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    # Released weights were trained with dropout 0; kept for fine-tuning experiments.
    dropout: float = 0.0
    # Width of the decoder's first level (its widths are decoder_dim * reversed dim_mult).
    # None: the same as dim (Wan 2.1); Wan 2.2's decoder is 256 wide against 160.
    decoder_dim: int | None = None
    # Pixels folded into channels before the encoder (and unfolded after the decoder) along
    # H and W: 1 for Wan 2.1, 2 for Wan 2.2 (3 -> 12 channels), which doubles the spatial
    # compression to 16 without another level of convs.
    patch_size: int = 1
    # Wrap each resolution level in a parameter-free shortcut (an average-down around the
    # encoder's levels, a duplicate-up around the decoder's up-sampling ones), as Wan 2.2
    # does; the level's layers then nest under `downsamples.N.downsamples.M`.
    level_shortcuts: bool = False
    # Wan 2.1's up-sampler convs halve the width they hand on; Wan 2.2's keep it.
    upsample_halves: bool = True
    # Channels of a frame: 3 (RGB); 4 for Qwen-Image-Layered's RGBA VAE, whose encoder's
    # first conv and decoder's last conv see alpha as a fourth plane.
    image_channels: int = 3
    # Output pixels per decoded pixel along H and W: the decoder's head gives
    # image_channels * upscale**2 channels, pixel-shuffled per frame (F.pixel_shuffle's
    # order). 2 for spacepxl's upscaling decoder; the encoder and the latents are Wan 2.1's.
    upscale: int = 1
    # Per-channel latent statistics; None means the published ones for z_dim 16 (Wan 2.1)
    # or 48 (Wan 2.2), else 0 and 1.
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None
    # Free text carried into checkpoint metadata (e.g. "wan2.1", "demo").
    name: str = field(default="wan2.1", compare=False)

    def __post_init__(self) -> None:
        published = PUBLISHED_STATS.get(self.z_dim, ((0.0,) * self.z_dim, (1.0,) * self.z_dim))
        if self.latents_mean is None:
            object.__setattr__(self, "latents_mean", published[0])
        if self.latents_std is None:
            object.__setattr__(self, "latents_std", published[1])
        if self.decoder_dim is None:
            object.__setattr__(self, "decoder_dim", self.dim)
        # Accept lists (from JSON) but store tuples so the value stays hashable and frozen.
        for f in ("dim_mult", "attn_scales", "temporal_downsample"):
            object.__setattr__(self, f, tuple(getattr(self, f)))
        for f in ("latents_mean", "latents_std"):
            object.__setattr__(self, f, tuple(float(v) for v in getattr(self, f)))
        object.__setattr__(self, "temporal_downsample", tuple(bool(v) for v in self.temporal_downsample))
        object.__setattr__(self, "attn_scales", tuple(float(v) for v in self.attn_scales))
        if min(self.dim, self.decoder_dim, self.z_dim, self.num_res_blocks, self.patch_size, self.image_channels, self.upscale) < 1:
            raise ValueError(f"dim, decoder_dim, z_dim, num_res_blocks, patch_size, image_channels and upscale must be positive, got {self}")
        if len(self.dim_mult) < 2:
            raise ValueError(f"dim_mult needs at least 2 levels, got {self.dim_mult}")
        # Far past any real model (Wan 2.2 is dim 160/256, z 48, 4 levels): a config from a
        # file's metadata must not be able to ask for a model no machine could build.
        limits = {"dim": (self.dim, 4096), "decoder_dim": (self.decoder_dim, 4096), "z_dim": (self.z_dim, 1024),
                  "num_res_blocks": (self.num_res_blocks, 16), "patch_size": (self.patch_size, 8),
                  "image_channels": (self.image_channels, 4), "upscale": (self.upscale, 8),
                  "levels (len(dim_mult))": (len(self.dim_mult), 8), "dim_mult entries": (max(self.dim_mult), 64)}
        for what, (value, most) in limits.items():
            if value > most:
                raise ValueError(f"{what} must be at most {most}, got {value}")
        if self.upscale > 1 and self.patch_size > 1:
            # No such model is published, and the two sub-pixel orders would have to be chosen.
            raise ValueError(f"an upscaling decoder (upscale={self.upscale}) needs patch_size 1, got {self.patch_size}")
        if min(self.dim_mult) < 1:
            raise ValueError(f"dim_mult entries must be positive, got {self.dim_mult}")
        if len(self.temporal_downsample) != len(self.dim_mult) - 1:
            raise ValueError(
                f"temporal_downsample needs {len(self.dim_mult) - 1} entries (one per down-sampling "
                f"level of dim_mult={self.dim_mult}), got {len(self.temporal_downsample)}"
            )
        if len(self.latents_mean) != self.z_dim or len(self.latents_std) != self.z_dim:
            raise ValueError(
                f"latents_mean and latents_std need z_dim={self.z_dim} entries, "
                f"got {len(self.latents_mean)} and {len(self.latents_std)}"
            )
        if not all(0 < s < float("inf") for s in self.latents_std) or not all(abs(m) < float("inf") for m in self.latents_mean):
            raise ValueError("latents_std entries must be positive and finite, latents_mean entries finite")

    @property
    def spatial_ratio(self) -> int:
        """Pixels per latent along H and W (8 for Wan 2.1, 16 for Wan 2.2)."""
        return self.patch_size * 2 ** (len(self.dim_mult) - 1)

    @property
    def family(self) -> str:
        """The released model this config's architecture belongs to."""
        return "Wan 2.2" if self.level_shortcuts else "Wan 2.1"

    @property
    def encoder_width(self) -> float:
        """Channels per video pixel at the encoder's widest full-resolution layer (what a
        chunk's activation costs): dim, over the pixels a patch folds together."""
        return self.dim / self.patch_size**2

    @property
    def decoder_width(self) -> float:
        """The same for the decoder's last level."""
        return self.decoder_dim / self.patch_size**2

    @property
    def pipeline_fps(self) -> float:
        """The frame rate this family's video pipelines write: 16 for Wan 2.1, 24 for
        Wan2.2-TI2V-5B (121 frames at 1280x704); what decoding assumes when latents say nothing."""
        return 24.0 if self.level_shortcuts else 16.0

    @property
    def in_channels(self) -> int:
        """Channels the encoder's first conv sees: a frame's channels, patchified."""
        return self.image_channels * self.patch_size**2

    @property
    def out_channels(self) -> int:
        """Channels the decoder's last conv gives: a frame's, patchified, times the upscale's sub-pixels."""
        return self.in_channels * self.upscale**2

    @property
    def description(self) -> str:
        """What this model is, in words (what `wanvae info` says): the published model its
        name or shapes point to, and how it differs from its family's release."""
        return describe_model(self)

    @property
    def temporal_ratio(self) -> int:
        """Frames per latent frame after the first (4 for Wan 2.1)."""
        return 2 ** sum(self.temporal_downsample)

    @property
    def decoded_spatial_ratio(self) -> int:
        """Output pixels per latent along H and W: the encoder's ratio, times an upscaling
        decoder's factor."""
        return self.spatial_ratio * self.upscale

    def latent_frames(self, frames: int) -> int:
        return 1 + (frames - 1) // self.temporal_ratio

    def pixel_frames(self, latent_frames: int) -> int:
        return 1 + self.temporal_ratio * (latent_frames - 1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VAEConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown VAEConfig fields {unknown}; valid fields: {sorted(known)}")
        return cls(**d)


# Names the loader gives the published models built on these blocks (from a config, a
# file's metadata or, failing those, its shapes), with what `info` says of each.
KNOWN_MODELS = {
    "wan2.1": "Wan 2.1 VAE (Wan2.1_VAE.pth: Wan 2.1, Wan 2.2 A14B, SkyReels-V2; Qwen-Image's VAE has the same keys and shapes)",
    "wan2.2": "Wan 2.2 VAE (Wan2.2-TI2V-5B)",
    "qwen-image": "Qwen-Image VAE (Wan 2.1's architecture and encoder, its decoder fine-tuned on images)",
    "qwen-image-layered": "Qwen-Image-Layered RGBA VAE (Wan 2.1's architecture, 4 channels in and out)",
    "wan2.1-upscale2x": "Wan 2.1 VAE with a 2x upscaling decoder (spacepxl's Wan2.1-VAE-upscale2x; Wan 2.1 latents)",
    "wan2.1-pruned": "pruned Wan 2.1 VAE (LightVAE style)",
    "wan2.2-pruned-decoder": "Wan 2.2 VAE with a pruned decoder (LightVAE style; Wan 2.2 latents)",
}


def describe_model(cfg: VAEConfig) -> str:
    """`cfg.description`: a known model's words, with the widths where pruned; else the family."""
    text = KNOWN_MODELS.get(cfg.name, f"{cfg.family} architecture, named {cfg.name!r}")
    full_dim, full_decoder = (160, 256) if cfg.level_shortcuts else (96, 96)
    if cfg.dim != full_dim:
        text += f": widths {cfg.dim} of {full_dim}"
    elif cfg.decoder_dim != full_decoder:
        text += f": decoder widths {cfg.decoder_dim} of {full_decoder}"
    if cfg.upscale > 1 and cfg.name != "wan2.1-upscale2x":
        text += f", {cfg.upscale}x upscaling decoder"
    if cfg.image_channels != 3 and not cfg.name.startswith("qwen-image-layered"):
        text += f", {cfg.image_channels} channels a frame"
    return text


# What Wan2.2-TI2V-5B ships: 160 wide encoder, 256 wide decoder, 48 channels, 4x16x16.
WAN22 = VAEConfig(dim=160, decoder_dim=256, z_dim=48, patch_size=2, level_shortcuts=True, upsample_halves=False, name="wan2.2")

PRESETS: dict[str, VAEConfig] = {
    "wan2.1": VAEConfig(),
    "wan2.2": WAN22,
    # Same architecture and latent layout, narrow enough to train and test on a CPU.
    "tiny": VAEConfig(dim=8, name="tiny"),
    "small": VAEConfig(dim=16, name="small"),
    # Wan 2.2's family at a CPU's size: the decoder keeps its 1.6x width over the encoder.
    "tiny-2.2": dataclasses.replace(WAN22, dim=8, decoder_dim=12, name="tiny-2.2"),
    "small-2.2": dataclasses.replace(WAN22, dim=16, decoder_dim=24, name="small-2.2"),
    # The other published members, at a CPU's size (tests): Qwen-Image-Layered's RGBA VAE,
    # the 2x upscaling decoder.
    "tiny-rgba": VAEConfig(dim=8, image_channels=4, name="tiny-rgba"),
    "tiny-upscale2x": VAEConfig(dim=8, upscale=2, name="tiny-upscale2x"),
}


def preset(name: str) -> VAEConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown config preset {name!r}; valid presets: {sorted(PRESETS)}") from None
