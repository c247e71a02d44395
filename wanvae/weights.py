"""Checkpoints: format detection, original <-> diffusers key maps, strict loading, saving.

Our parameter names are the original checkpoint's keys, so the original layout (`.pth` or
`.safetensors`) loads with no map at all; diffusers' `AutoencoderKLWan` layout goes
through `diffusers_to_original`. Loading never unpickles arbitrary objects.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from . import __version__
from .atomic import atomic_dir, atomic_path
from .config import VAEConfig
from .model import WanVAE

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
CONFIG_KEY = "wanvae_config"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit the model."""


# ---- key maps -------------------------------------------------------------------------------
_RESBLOCK_TO_DIFFUSERS = {
    "residual.0.gamma": "norm1.gamma",
    "residual.2.weight": "conv1.weight",
    "residual.2.bias": "conv1.bias",
    "residual.3.gamma": "norm2.gamma",
    "residual.6.weight": "conv2.weight",
    "residual.6.bias": "conv2.bias",
    "shortcut.weight": "conv_shortcut.weight",
    "shortcut.bias": "conv_shortcut.bias",
}
_RESBLOCK_TO_ORIGINAL = {v: k for k, v in _RESBLOCK_TO_DIFFUSERS.items()}
_FIXED_TO_DIFFUSERS = {
    "encoder.conv1": "encoder.conv_in",
    "decoder.conv1": "decoder.conv_in",
    "encoder.head.0": "encoder.norm_out",
    "encoder.head.2": "encoder.conv_out",
    "decoder.head.0": "decoder.norm_out",
    "decoder.head.2": "decoder.conv_out",
    "conv1": "quant_conv",
    "conv2": "post_quant_conv",
}
_FIXED_TO_ORIGINAL = {v: k for k, v in _FIXED_TO_DIFFUSERS.items()}


def _split_param(key: str) -> tuple[str, str]:
    module, _, param = key.rpartition(".")
    return module, param


def _resblock_suffix(rest: str, table: Mapping[str, str]) -> str:
    return table.get(rest, rest)  # attention and resample names are the same in both


def original_to_diffusers(key: str, cfg: VAEConfig) -> str:
    """The diffusers (AutoencoderKLWan) name of an original checkpoint key."""
    module, param = _split_param(key)
    if module in _FIXED_TO_DIFFUSERS:
        return f"{_FIXED_TO_DIFFUSERS[module]}.{param}"
    m = re.fullmatch(r"(encoder|decoder)\.middle\.(\d+)\.(.+)", key)
    if m:
        part, i, rest = m.group(1), int(m.group(2)), m.group(3)
        if i == 1:
            return f"{part}.mid_block.attentions.0.{rest}"
        return f"{part}.mid_block.resnets.{i // 2}.{_resblock_suffix(rest, _RESBLOCK_TO_DIFFUSERS)}"
    m = re.fullmatch(r"encoder\.downsamples\.(\d+)\.(.+)", key)
    if m:
        return f"encoder.down_blocks.{m.group(1)}.{_resblock_suffix(m.group(2), _RESBLOCK_TO_DIFFUSERS)}"
    m = re.fullmatch(r"decoder\.upsamples\.(\d+)\.(.+)", key)
    if m:
        if cfg.attn_scales:
            raise CheckpointError("diffusers' AutoencoderKLWan has no attention in its up blocks; attn_scales must be empty")
        per_stage = cfg.num_res_blocks + 2  # res blocks, then one up-sampler
        stage, j = divmod(int(m.group(1)), per_stage)
        rest = m.group(2)
        if j == per_stage - 1:
            return f"decoder.up_blocks.{stage}.upsamplers.0.{rest}"
        return f"decoder.up_blocks.{stage}.resnets.{j}.{_resblock_suffix(rest, _RESBLOCK_TO_DIFFUSERS)}"
    raise CheckpointError(f"no diffusers name for key {key!r}")


def diffusers_to_original(key: str, cfg: VAEConfig) -> str:
    """The original checkpoint key of a diffusers (AutoencoderKLWan) name."""
    module, param = _split_param(key)
    if module in _FIXED_TO_ORIGINAL:
        return f"{_FIXED_TO_ORIGINAL[module]}.{param}"
    m = re.fullmatch(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key)
    if m:
        part, kind, i, rest = m.group(1), m.group(2), int(m.group(3)), m.group(4)
        if kind == "attentions":
            return f"{part}.middle.1.{rest}"
        return f"{part}.middle.{2 * i}.{_resblock_suffix(rest, _RESBLOCK_TO_ORIGINAL)}"
    m = re.fullmatch(r"encoder\.down_blocks\.(\d+)\.(.+)", key)
    if m:
        return f"encoder.downsamples.{m.group(1)}.{_resblock_suffix(m.group(2), _RESBLOCK_TO_ORIGINAL)}"
    m = re.fullmatch(r"decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.(.+)", key)
    if m:
        stage, kind, j, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        per_stage = cfg.num_res_blocks + 2
        if kind == "upsamplers":
            return f"decoder.upsamples.{stage * per_stage + per_stage - 1}.{rest}"
        return f"decoder.upsamples.{stage * per_stage + j}.{_resblock_suffix(rest, _RESBLOCK_TO_ORIGINAL)}"
    raise CheckpointError(f"no original name for diffusers key {key!r}")


# ---- reading ---------------------------------------------------------------------------------
def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own types for truncated/corrupt files
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    return tensors, metadata


def _read_torch(path: Path) -> dict[str, Tensor]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        try:  # mmap needs the zip format; older files are read without it
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception:
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({e})") from e
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors (a state dict), got {type(obj).__name__}")
    return dict(obj)


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, str], str]:
    """Tensors in the original key layout, metadata, and the detected format's name."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    metadata: dict[str, str] = {}
    if path.is_dir():
        weights = path / DIFFUSERS_WEIGHTS
        if not weights.exists():
            raise CheckpointError(f"{path}: a directory, but it has no {DIFFUSERS_WEIGHTS} (a diffusers AutoencoderKLWan folder)")
        tensors, metadata = _read_safetensors(weights)
        config_file = path / "config.json"
        if config_file.exists():
            metadata = {**metadata, "diffusers_config": config_file.read_text()}
    elif path.suffix == ".safetensors":
        tensors, metadata = _read_safetensors(path)
    elif path.suffix in (".pth", ".pt", ".ckpt", ".bin"):
        tensors = _read_torch(path)
    else:
        raise CheckpointError(f"{path}: unknown checkpoint type; expected .pth, .pt, .safetensors or a diffusers folder")
    if not tensors:
        raise CheckpointError(f"{path}: holds no tensors")
    if "encoder.conv_in.weight" in tensors:
        cfg = _infer_config_diffusers(tensors, metadata)
        tensors = {diffusers_to_original(k, cfg): v for k, v in tensors.items()}
        return tensors, metadata, "diffusers"
    if "encoder.conv1.weight" not in tensors:
        sample = ", ".join(sorted(tensors)[:3])
        raise CheckpointError(f"{path}: not a Wan VAE checkpoint (no encoder.conv1.weight or encoder.conv_in.weight; keys start {sample})")
    return tensors, metadata, "original"


def _infer_config_diffusers(tensors: Mapping[str, Tensor], metadata: Mapping[str, str]) -> VAEConfig:
    """Enough of the config to map diffusers names (num_res_blocks decides the decoder indices)."""
    if "diffusers_config" in metadata:
        c = json.loads(metadata["diffusers_config"])
        return _config_from_diffusers_json(c)
    n = 1 + max(int(m.group(1)) for k in tensors if (m := re.match(r"decoder\.up_blocks\.0\.resnets\.(\d+)\.", k)))
    return VAEConfig(num_res_blocks=n - 1)


def _config_from_diffusers_json(c: Mapping) -> VAEConfig:
    base = VAEConfig()
    return VAEConfig(
        dim=c.get("base_dim", base.dim),
        z_dim=c.get("z_dim", base.z_dim),
        dim_mult=tuple(c.get("dim_mult", base.dim_mult)),
        num_res_blocks=c.get("num_res_blocks", base.num_res_blocks),
        attn_scales=tuple(c.get("attn_scales", base.attn_scales)),
        temporal_downsample=tuple(c.get("temperal_downsample", base.temporal_downsample)),
        dropout=c.get("dropout", base.dropout),
        latents_mean=c.get("latents_mean"),
        latents_std=c.get("latents_std"),
    )


def infer_config(tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None) -> VAEConfig:
    """The config of an original-layout state dict: from metadata if there, else from shapes."""
    metadata = metadata or {}
    if CONFIG_KEY in metadata:
        return VAEConfig.from_dict(json.loads(metadata[CONFIG_KEY]))
    if "diffusers_config" in metadata:
        return _config_from_diffusers_json(json.loads(metadata["diffusers_config"]))
    dim = tensors["encoder.conv1.weight"].shape[0]
    z_dim = tensors["conv2.weight"].shape[0] if "conv2.weight" in tensors else tensors["conv1.weight"].shape[0] // 2
    # Walk the encoder's flat down-sampling list: res blocks, optional attention, resamplers.
    idx = sorted({int(m.group(1)) for k in tensors if (m := re.match(r"encoder\.downsamples\.(\d+)\.", k))})
    mult, temporal, attn = [], [], []
    blocks_in_level, res_blocks = 0, None
    scale = 1.0
    for i in idx:
        prefix = f"encoder.downsamples.{i}."
        if prefix + "residual.2.weight" in tensors:
            blocks_in_level += 1
            out_dim = tensors[prefix + "residual.2.weight"].shape[0]
        elif prefix + "to_qkv.weight" in tensors:
            if scale not in attn:
                attn.append(scale)
        elif prefix + "resample.1.weight" in tensors:
            mult.append(out_dim // dim)
            temporal.append(prefix + "time_conv.weight" in tensors)
            res_blocks = res_blocks or blocks_in_level
            blocks_in_level = 0
            scale /= 2.0
    mult.append(out_dim // dim)
    res_blocks = res_blocks or blocks_in_level
    return VAEConfig(
        dim=dim,
        z_dim=z_dim,
        dim_mult=tuple(mult),
        num_res_blocks=res_blocks,
        attn_scales=tuple(attn),
        temporal_downsample=tuple(temporal),
        # Without metadata only Wan 2.1's own statistics can be assumed (the config's
        # default for z_dim=16; 0 and 1 otherwise).
        name="wan2.1" if dim == 96 and z_dim == 16 else "custom",
    )


def load_state_dict_strict(vae: WanVAE, tensors: Mapping[str, Tensor], source: str = "checkpoint") -> None:
    """Copy tensors into `vae`, refusing any missing, unexpected or mis-shaped key."""
    expected = vae.state_dict()
    _check_keys(expected.keys(), tensors, source, {k: tuple(v.shape) for k, v in expected.items()})
    vae.load_state_dict(tensors, strict=True)


def _check_keys(expected: Iterable[str], tensors: Mapping[str, Tensor], source: str, shapes: Mapping[str, tuple] | None = None) -> None:
    """Raise CheckpointError naming missing, unexpected or (given `shapes`) mis-shaped keys."""
    expected = list(expected)
    shapes = shapes or {}
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    misshaped = [
        f"{k} {tuple(tensors[k].shape)} (model wants {shape})"
        for k, shape in shapes.items()
        if k in tensors and tuple(tensors[k].shape) != shape
    ]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
        if keys:
            shown = ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(problems))


def load(
    path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, parts: str = "all"
) -> WanVAE:
    """A `WanVAE` from an original `.pth`/`.safetensors` or a diffusers folder/file.

    The config comes from the file's metadata, or is inferred from the tensor shapes.
    `parts='encoder'` (or 'decoder') keeps only that half: the other's weights are read,
    checked to be there, and dropped, so an encoding job does not hold the decoder.
    """
    tensors, metadata, _ = read_checkpoint(path)
    try:
        cfg = infer_config(tensors, metadata)
    except (KeyError, ValueError, UnboundLocalError) as e:
        raise CheckpointError(f"{path}: cannot work out the model config from the checkpoint ({e})") from e
    if parts != "all":
        # The whole checkpoint must still fit the full model: a half load is no excuse
        # for accepting a file with missing or stray tensors.
        with torch.device("meta"):
            full_keys = WanVAE(cfg).state_dict().keys()
        _check_keys(full_keys, tensors, str(path))
        keep = ("encoder.", "conv1.") if parts == "encoder" else ("decoder.", "conv2.")
        tensors = {k: v for k, v in tensors.items() if k.startswith(keep)}
    with torch.device("meta"):
        vae = WanVAE(cfg, parts=parts)
    vae = vae.to_empty(device="cpu")
    vae.reset_latent_stats()
    load_state_dict_strict(vae, tensors, source=str(path))
    return vae.to(device=device, dtype=dtype).eval()


# ---- writing ---------------------------------------------------------------------------------
def save(vae: WanVAE, path: str | os.PathLike, format: str = "original") -> Path:
    """Write `vae`'s weights atomically.

    format='original': `.safetensors` (config and latent statistics in the metadata) or
    `.pth` (a plain state dict, as `Wan2.1_VAE.pth`), chosen by the suffix.
    format='diffusers': a folder with config.json and diffusion_pytorch_model.safetensors
    that `AutoencoderKLWan.from_pretrained` reads.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if getattr(vae, "parts", "all") != "all":
        raise ValueError(f"this WanVAE holds only the {vae.parts}: a checkpoint needs both halves (load with parts='all')")
    state = {k: v.detach().contiguous().cpu() for k, v in vae.state_dict().items()}
    cfg = vae.config
    metadata = {CONFIG_KEY: cfg.to_json(), "format": "wanvae-original", "wanvae_version": __version__}
    if format == "diffusers":
        return _save_diffusers(state, cfg, path)
    if format != "original":
        raise ValueError(f"unknown checkpoint format {format!r}; valid: 'original', 'diffusers'")
    if path.suffix not in (".safetensors", ".pth", ".pt"):
        raise ValueError(f"{path}: checkpoint suffix must be .safetensors, .pth or .pt")
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            save_file(state, str(tmp), metadata=metadata)
        else:
            torch.save(state, str(tmp))
    return path


def diffusers_config(cfg: VAEConfig) -> dict:
    return {
        "_class_name": "AutoencoderKLWan",
        "_diffusers_version": "0.33.1",
        "base_dim": cfg.dim,
        "z_dim": cfg.z_dim,
        "dim_mult": list(cfg.dim_mult),
        "num_res_blocks": cfg.num_res_blocks,
        "attn_scales": list(cfg.attn_scales),
        "temperal_downsample": list(cfg.temporal_downsample),
        "dropout": cfg.dropout,
        "latents_mean": list(cfg.latents_mean),
        "latents_std": list(cfg.latents_std),
    }


def _save_diffusers(state: Mapping[str, Tensor], cfg: VAEConfig, path: Path) -> Path:
    from safetensors.torch import save_file

    renamed = {original_to_diffusers(k, cfg): v for k, v in state.items()}
    with atomic_dir(path) as tmp:
        save_file(renamed, str(tmp / DIFFUSERS_WEIGHTS), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(diffusers_config(cfg), indent=2) + "\n")
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a diffusers folder's weights file."""
    path = Path(path)
    if path.is_dir():
        path = path / DIFFUSERS_WEIGHTS
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
