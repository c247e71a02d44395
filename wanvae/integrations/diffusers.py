"""wanvae under diffusers' Wan pipelines: a drop-in for `AutoencoderKLWan`, and the way back.

    pipe.vae = wanvae.for_diffusers(wanvae.load("Wan2.1_VAE.pth"))

`WanVAEForDiffusers` is a real diffusers model (`ModelMixin` + `ConfigMixin`), so pipelines
accept it wherever they take a VAE (`from_pretrained(repo, vae=ours)` included) and read the
same `config`. It speaks diffusers' protocol at its boundary, not ours:

- `encode(x).latent_dist` is diffusers' own `DiagonalGaussianDistribution` over the raw
  moments (mean and clamped logvar), so `.mode()`, `.sample(generator)` and
  `retrieve_latents` give diffusers' numbers;
- `decode(z)` takes raw latents: the pipelines undo the normalisation before they decode.

Underneath it is one `WanVAE` (`.wan`), with its exact tiling, bounded memory and the
image-to-video fast path. This module imports diffusers; `import wanvae` does not.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.utils.accelerate_utils import apply_forward_hook
from torch import Tensor

from ..config import PUBLISHED_STATS
from ..model.taehv import TinyVAE
from ..model.vae import WanVAE
from ..io.weights import config_from_diffusers_json, diffusers_config, original_to_diffusers

# diffusers' defaults, so `enable_tiling()` with no arguments tiles as diffusers' would.
DIFFUSERS_TILE = 256


class WanVAEForDiffusers(ModelMixin, ConfigMixin):
    """A `WanVAE` behind `AutoencoderKLWan`'s interface (and `AutoencoderKLQwenImage`'s, whose
    only extra argument, `input_channels`, it takes too); the config takes the same arguments."""

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        base_dim: int = 96,
        decoder_base_dim: int | None = None,
        z_dim: int = 16,
        dim_mult: tuple[int, ...] = (1, 2, 4, 4),
        num_res_blocks: int = 2,
        attn_scales: tuple[float, ...] = (),
        temperal_downsample: tuple[bool, ...] = (False, True, True),
        dropout: float = 0.0,
        latents_mean: list[float] | None = None,
        latents_std: list[float] | None = None,
        is_residual: bool = False,
        in_channels: int = 3,
        out_channels: int = 3,
        patch_size: int | None = None,
        scale_factor_temporal: int = 4,
        scale_factor_spatial: int = 8,
        input_channels: int | None = None,
    ) -> None:
        super().__init__()
        if latents_mean is None or latents_std is None:
            # Pipelines read these from the config, so they are always there (diffusers'
            # defaults are the published Wan 2.1 statistics, 48-channel ones for Wan 2.2).
            mean, std = PUBLISHED_STATS.get(z_dim, ([0.0] * z_dim, [1.0] * z_dim))
            self.register_to_config(latents_mean=list(latents_mean or mean), latents_std=list(latents_std or std))
        self.wan = WanVAE(config_from_diffusers_json(self.config))
        # Read directly by WanVideoToVideoPipeline (diffusers' spelling).
        self.temperal_downsample = list(temperal_downsample)
        self.z_dim = z_dim
        self.spatial_compression_ratio = scale_factor_spatial
        self.use_slicing = False
        self.use_tiling = False
        self.tile_sample_min_height = self.tile_sample_min_width = DIFFUSERS_TILE
        self.tile_sample_stride_height = self.tile_sample_stride_width = DIFFUSERS_TILE * 3 // 4

    # ---- what pipelines read -------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        """The decoder's dtype (pipelines cast the final latents to it); each part's input is
        cast to that part's own dtype, so an fp32 encoder beside a bf16 decoder works."""
        return self.wan.part_dtype("decoder" if self.wan.parts != "encoder" else "encoder")

    # ---- diffusers' switches, mapped onto ours ---------------------------------------------
    def enable_tiling(
        self,
        tile_sample_min_height: int | None = None,
        tile_sample_min_width: int | None = None,
        tile_sample_stride_height: float | None = None,
        tile_sample_stride_width: float | None = None,
    ) -> None:
        """Tile as diffusers would with these arguments, but exactly: the result equals the
        untiled one. `tile_sample_min_*` becomes our tile size (the area a tile computes on,
        which is what bounds memory); the strides are kept for `config` readers but unused,
        since exact tiles need no overlap to blend away. Like diffusers, the Wan 2.2 encoder
        reads the sizes in patchified pixels (2 video pixels each), its decoder in video pixels."""
        self.use_tiling = True
        self.tile_sample_min_height = tile_sample_min_height or self.tile_sample_min_height
        self.tile_sample_min_width = tile_sample_min_width or self.tile_sample_min_width
        self.tile_sample_stride_height = tile_sample_stride_height or self.tile_sample_stride_height
        self.tile_sample_stride_width = tile_sample_stride_width or self.tile_sample_stride_width

    def disable_tiling(self) -> None:
        self.use_tiling = False

    def enable_slicing(self) -> None:
        """One batch item at a time (the same numbers, a batch's memory divided by its size)."""
        self.use_slicing = True

    def disable_slicing(self) -> None:
        self.use_slicing = False

    def _tile(self, part: str) -> tuple[int, int] | None:
        """Our tile (w, h) in video pixels for `part`, or None when tiling is off."""
        if not self.use_tiling or not getattr(self.wan, "tiles", True):
            return None
        scale = self.wan.config.patch_size if part == "encoder" else 1
        return int(self.tile_sample_min_width) * scale, int(self.tile_sample_min_height) * scale

    # ---- the protocol ------------------------------------------------------------------------
    @apply_forward_hook
    def encode(self, x: Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple[DiagonalGaussianDistribution]:
        """Pixels [B, 3, T, H, W] in [-1, 1] -> the posterior over raw latents."""
        x = x.to(self.wan.part_dtype("encoder"))
        pieces = x.split(1) if self.use_slicing else (x,)
        moments = torch.cat([torch.cat(self._encode_moments(p), dim=1) for p in pieces])
        posterior = DiagonalGaussianDistribution(moments)
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    def _encode_moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        conditioning = conditioning_frames(x, self.wan.config.temporal_ratio)
        if conditioning is not None:
            first, last = conditioning
            return self.wan.encode_conditioning_moments(first, last, num_frames=x.shape[2])
        return self.wan.encode_moments(x, tile=self._tile("encoder"))

    @apply_forward_hook
    def decode(self, z: Tensor, return_dict: bool = True) -> DecoderOutput | tuple[Tensor]:
        """Raw latents [B, z, t, h, w] (not normalised) -> pixels clamped to [-1, 1]."""
        z = z.to(self.wan.part_dtype("decoder"))
        pieces = z.split(1) if self.use_slicing else (z,)
        video = torch.cat([self.wan.decode(p, raw=True, tile=self._tile("decoder")) for p in pieces])
        return DecoderOutput(sample=video) if return_dict else (video,)

    def forward(
        self, sample: Tensor, sample_posterior: bool = False, return_dict: bool = True, generator: torch.Generator | None = None
    ) -> DecoderOutput | tuple[Tensor]:
        posterior = self.encode(sample).latent_dist
        z = posterior.sample(generator=generator) if sample_posterior else posterior.mode()
        return self.decode(z, return_dict=return_dict)

    # ---- saving and loading: diffusers' own folder layout ------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Write an `AutoencoderKLWan` folder (config.json and diffusers-named weights) that
        diffusers' own class reads too; a pipeline's `save_pretrained` lands here."""
        from ..io.weights import save

        if kwargs.get("push_to_hub"):
            raise ValueError("WanVAEForDiffusers.save_pretrained writes a local folder only; push it with huggingface_hub")
        if not isinstance(self.wan, WanVAE):
            raise ValueError("a TAEHV model has no AutoencoderKLWan folder layout: keep its own file (wanvae.load reads it)")
        save(self.wan, Path(save_directory), format="diffusers")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, subfolder: str | None = None, **kwargs) -> WanVAEForDiffusers:
        """Read a local `AutoencoderKLWan` folder (or any checkpoint `wanvae.load` reads).
        `torch_dtype` is honoured; a pipeline's other loading options do not apply."""
        from ..io.weights import load

        path = Path(pretrained_model_name_or_path) / (subfolder or "")
        if not path.exists():
            raise ValueError(f"{path}: no such local folder; WanVAEForDiffusers reads local checkpoints only (no hub downloads)")
        if kwargs.get("device_map") not in (None, "cpu") or kwargs.get("quantization_config") is not None:
            raise ValueError("WanVAEForDiffusers.from_pretrained supports neither device_map nor quantization; move it with .to()")
        return for_diffusers(load(path, dtype=kwargs.get("torch_dtype") or torch.float32))


def conditioning_frames(x: Tensor, temporal_ratio: int) -> tuple[Tensor, Tensor | None] | None:
    """(first, last) when clip `x` is Wan's image-to-video conditioning: a first frame then
    frames that are exactly zero (first-and-last: with a last frame after them), and long
    enough that skipping the zeros saves work. None for any other clip: checked, not guessed."""
    if x.dim() != 5 or x.shape[2] < 1 + temporal_ratio or (x.shape[2] - 1) % temporal_ratio:
        return None
    middle = x[:, :, 1:-1]
    if middle.any():  # a NaN is "any", so never mistaken for zero
        return None
    first, last = x[:, :, :1], x[:, :, -1:]
    return first, (last if last.any() else None)


def for_diffusers(vae) -> WanVAEForDiffusers:
    """A `WanVAE`, a TAEHV `TinyVAE`, a checkpoint path, or diffusers' own `AutoencoderKLWan` /
    `AutoencoderKLQwenImage` (a pipeline's `pipe.vae`) as a drop-in `vae` for diffusers' Wan
    and Qwen-Image pipelines.

    The adapter holds `vae` itself (no copy): its weights, device and dtypes are the model's.
    A TAEHV model decodes a pipeline's drafts in seconds; the pipeline sees the config of
    the Wan VAE whose latents it takes (Wan 2.1's, or Wan 2.2's for taew2_2).
    """
    if not isinstance(vae, (WanVAE, TinyVAE)):  # a path, or diffusers' own AutoencoderKLWan / AutoencoderKLQwenImage
        from ..io.weights import load

        vae = load(vae)
    wan_config = vae.config
    if not isinstance(vae, WanVAE):
        from ..config import preset

        wan_config = preset("wan2.2" if vae.config.z_dim == 48 else "wan2.1")
    kwargs = {k: v for k, v in diffusers_config(wan_config).items() if not k.startswith("_")}
    with torch.device("meta"):  # the WanVAE the constructor builds is replaced at once
        adapter = WanVAEForDiffusers(**kwargs)
    adapter.wan = vae
    return adapter.eval()


def to_autoencoder_kl_wan(vae: WanVAE):
    """diffusers' own class holding `vae`'s weights (shared, not copied: clone them first if
    either model will be trained): `AutoencoderKLWan`, or `AutoencoderKLQwenImage` for a
    Qwen-Image VAE. An upscaling decoder's `AutoencoderKLWan` gives the head's channels;
    diffusers does not pixel-shuffle them."""
    import diffusers

    if vae.parts != "all":
        raise ValueError(f"this WanVAE holds only the {vae.parts}: diffusers' class needs both halves (load with parts='all')")
    config = diffusers_config(vae.config)
    kwargs = {k: v for k, v in config.items() if not k.startswith("_")}
    with torch.device("meta"):
        ref = getattr(diffusers, config["_class_name"])(**kwargs)
    ref.load_state_dict({original_to_diffusers(k, vae.config): v for k, v in vae.state_dict().items()}, strict=True, assign=True)
    return ref.to(vae.device).eval()

