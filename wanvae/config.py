"""Hyper-parameters of the Wan 2.1 video VAE, as one frozen value."""

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
    # Per-channel latent statistics; None means Wan 2.1's for z_dim=16, else 0 and 1.
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None
    # Free text carried into checkpoint metadata (e.g. "wan2.1", "demo").
    name: str = field(default="wan2.1", compare=False)

    def __post_init__(self) -> None:
        if self.latents_mean is None:
            object.__setattr__(self, "latents_mean", WAN21_LATENTS_MEAN if self.z_dim == 16 else (0.0,) * self.z_dim)
        if self.latents_std is None:
            object.__setattr__(self, "latents_std", WAN21_LATENTS_STD if self.z_dim == 16 else (1.0,) * self.z_dim)
        # Accept lists (from JSON) but store tuples so the value stays hashable and frozen.
        for f in ("dim_mult", "attn_scales", "temporal_downsample"):
            object.__setattr__(self, f, tuple(getattr(self, f)))
        for f in ("latents_mean", "latents_std"):
            object.__setattr__(self, f, tuple(float(v) for v in getattr(self, f)))
        object.__setattr__(self, "temporal_downsample", tuple(bool(v) for v in self.temporal_downsample))
        object.__setattr__(self, "attn_scales", tuple(float(v) for v in self.attn_scales))
        if self.dim < 1 or self.z_dim < 1 or self.num_res_blocks < 1:
            raise ValueError(f"dim, z_dim and num_res_blocks must be positive, got {self}")
        if len(self.dim_mult) < 2:
            raise ValueError(f"dim_mult needs at least 2 levels, got {self.dim_mult}")
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
        if any(s <= 0 for s in self.latents_std):
            raise ValueError("latents_std entries must be positive")

    @property
    def spatial_ratio(self) -> int:
        """Pixels per latent along H and W (8 for Wan 2.1)."""
        return 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_ratio(self) -> int:
        """Frames per latent frame after the first (4 for Wan 2.1)."""
        return 2 ** sum(self.temporal_downsample)

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


PRESETS: dict[str, VAEConfig] = {
    "wan2.1": VAEConfig(),
    # Same architecture and latent layout, narrow enough to train and test on a CPU.
    "tiny": VAEConfig(dim=8, name="tiny"),
    "small": VAEConfig(dim=16, name="small"),
}


def preset(name: str) -> VAEConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown config preset {name!r}; valid presets: {sorted(PRESETS)}") from None
