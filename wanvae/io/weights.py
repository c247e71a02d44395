"""Checkpoints: format detection, original <-> diffusers key maps, strict loading, saving.

Our parameter names are the original checkpoint's keys, so the original layout (`.pth` or
`.safetensors`) loads with no map at all; diffusers' `AutoencoderKLWan` layout goes
through `diffusers_to_original`. Loading never unpickles arbitrary objects.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from .. import __version__
from .atomic import atomic_dir, atomic_path
from ..config import WAN22, VAEConfig
from ..model.vae import WanVAE

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
CONFIG_KEY = "wanvae_config"


class CheckpointNote(UserWarning):
    """Something a load did that its caller should hear of, though nothing is wrong (the
    command line prints it as one line)."""


# Tensors published files carry that no inference layer reads: skipped by name, said once.
# LightX2V's pruned Wan 2.2 VAEs keep their distillation heads.
UNUSED_PREFIXES = ("dynamic_feature_projection_heads.",)


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
    if cfg.attn_scales and re.match(r"(encoder\.downsamples|decoder\.upsamples)\.", key):
        raise CheckpointError("diffusers' AutoencoderKLWan has no attention in its down or up blocks; attn_scales must be empty")
    # Wan 2.2: levels nest their layers; diffusers names a level's layers resnets.M, then
    # its down-/up-sampler.
    m = re.fullmatch(r"encoder\.downsamples\.(\d+)\.downsamples\.(\d+)\.(.+)", key)
    if m:
        level, j, rest = m.group(1), int(m.group(2)), m.group(3)
        if j == cfg.num_res_blocks:
            return f"encoder.down_blocks.{level}.downsampler.{rest}"
        return f"encoder.down_blocks.{level}.resnets.{j}.{_resblock_suffix(rest, _RESBLOCK_TO_DIFFUSERS)}"
    m = re.fullmatch(r"decoder\.upsamples\.(\d+)\.upsamples\.(\d+)\.(.+)", key)
    if m:
        level, j, rest = m.group(1), int(m.group(2)), m.group(3)
        if j == cfg.num_res_blocks + 1:
            return f"decoder.up_blocks.{level}.upsampler.{rest}"
        return f"decoder.up_blocks.{level}.resnets.{j}.{_resblock_suffix(rest, _RESBLOCK_TO_DIFFUSERS)}"
    # Wan 2.1: one flat list of layers per half.
    m = re.fullmatch(r"encoder\.downsamples\.(\d+)\.(.+)", key)
    if m:
        return f"encoder.down_blocks.{m.group(1)}.{_resblock_suffix(m.group(2), _RESBLOCK_TO_DIFFUSERS)}"
    m = re.fullmatch(r"decoder\.upsamples\.(\d+)\.(.+)", key)
    if m:
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
    m = re.fullmatch(r"encoder\.down_blocks\.(\d+)\.(resnets\.(\d+)|downsampler)\.(.+)", key)
    if m:  # Wan 2.2's residual down blocks
        level, j, rest = m.group(1), m.group(3), m.group(4)
        if j is None:
            return f"encoder.downsamples.{level}.downsamples.{cfg.num_res_blocks}.{rest}"
        return f"encoder.downsamples.{level}.downsamples.{j}.{_resblock_suffix(rest, _RESBLOCK_TO_ORIGINAL)}"
    m = re.fullmatch(r"encoder\.down_blocks\.(\d+)\.(.+)", key)
    if m:
        return f"encoder.downsamples.{m.group(1)}.{_resblock_suffix(m.group(2), _RESBLOCK_TO_ORIGINAL)}"
    m = re.fullmatch(r"decoder\.up_blocks\.(\d+)\.(resnets\.(\d+)|upsampler)\.(.+)", key)
    if m and cfg.level_shortcuts:  # Wan 2.2's residual up blocks
        level, j, rest = m.group(1), m.group(3), m.group(4)
        if j is None:
            return f"decoder.upsamples.{level}.upsamples.{cfg.num_res_blocks + 1}.{rest}"
        return f"decoder.upsamples.{level}.upsamples.{j}.{_resblock_suffix(rest, _RESBLOCK_TO_ORIGINAL)}"
    m = re.fullmatch(r"decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.(.+)", key)
    if m:
        stage, kind, j, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        per_stage = cfg.num_res_blocks + 2
        if kind == "upsamplers":
            return f"decoder.upsamples.{stage * per_stage + per_stage - 1}.{rest}"
        return f"decoder.upsamples.{stage * per_stage + j}.{_resblock_suffix(rest, _RESBLOCK_TO_ORIGINAL)}"
    raise CheckpointError(f"no original name for diffusers key {key!r}")


# ---- reading ---------------------------------------------------------------------------------
KeyFilter = Callable[[str], bool]  # on original keys: which tensors to read, not just shape


def _read_safetensors(
    path: Path, keep: KeyFilter | None = None, diffusers_meta: Mapping[str, str] | None = None, verify: bool = False
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata; a tensor that `keep` turns down is a shape only (on the meta
    device), so a half load holds only its half of the file. With `verify`, those are
    still read one at a time and checked to be finite as they stream by, then dropped.
    `diffusers_meta` given, the file's names are diffusers' and `keep` sees their original names."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            names = list(f.keys())
            wanted = set(names)
            if keep is not None:
                original = dict(zip(names, names))
                if diffusers_meta is not None:
                    shapes = {k: _shape_of(f.get_slice(k)) for k in names}
                    cfg = _infer_config_diffusers(shapes, {**metadata, **diffusers_meta})
                    original = {k: diffusers_to_original(k, cfg) for k in names}
                wanted = {k for k in names if keep(original[k])}
            tensors = {}
            for k in names:
                if k in wanted:
                    tensors[k] = f.get_tensor(k)
                else:
                    if verify:
                        check_finite(k, f.get_tensor(k), path)
                    tensors[k] = _shape_of(f.get_slice(k))
    except CheckpointError:
        raise
    except Exception as e:  # safetensors raises its own types for truncated/corrupt files
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    return tensors, metadata


def check_finite(key: str, tensor: Tensor, source: str | os.PathLike) -> None:
    """Refuse a tensor holding NaN or infinity: a broken file, whichever half is used."""
    if tensor.is_floating_point() and not tensor.is_meta and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise CheckpointError(f"{source}: tensor {key} holds {bad} NaN or infinite value(s) of {tensor.numel()}; the file is broken")


def _read_torch(path: Path) -> dict[str, Tensor]:
    import pickle
    import warnings

    def read(**kwargs):
        with warnings.catch_warnings():  # torch's advice and deprecation notes are not ours to print
            warnings.simplefilter("ignore")
            return torch.load(str(path), map_location="cpu", weights_only=True, **kwargs)

    try:
        try:
            obj = read(mmap=True)
        except pickle.UnpicklingError:
            raise
        except Exception:  # mmap needs the zip format; older files are read without it
            obj = read()
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path}: holds pickled Python objects{what}, not only tensors; wanvae never unpickles objects "
            "(a plain state dict or a .safetensors file loads)"
        ) from None
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors (a state dict), got {type(obj).__name__}")
    return dict(obj)


def read_checkpoint(
    path: str | os.PathLike, keep: KeyFilter | None = None, verify: bool = False
) -> tuple[dict[str, Tensor], dict[str, str], str]:
    """Tensors in the original key layout, metadata, and the detected format's name.

    With `keep`, the tensors it turns down are shapes only (meta tensors): what a half
    load needs to check the whole file's layout without holding the other half. With
    `verify`, those are still checked to be finite as they are read and dropped.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    metadata: dict[str, str] = {}
    if path.is_dir():
        weights = path / DIFFUSERS_WEIGHTS
        if not weights.exists():
            raise CheckpointError(f"{path}: a directory, but it has no {DIFFUSERS_WEIGHTS} (a diffusers AutoencoderKLWan folder)")
        config_file = path / "config.json"
        extra = {"diffusers_config": config_file.read_text()} if config_file.exists() else {}
        tensors, metadata = _read_safetensors(weights, keep, extra, verify)
        metadata = {**metadata, **extra}
    elif path.suffix == ".safetensors":
        tensors, metadata = _read_safetensors(path, keep, {} if keep is not None and _has_diffusers_names(path) else None, verify)
    elif path.suffix in (".pth", ".pt", ".ckpt", ".bin"):
        tensors = _read_torch(path)
    else:
        raise CheckpointError(f"{path}: unknown checkpoint type; expected .pth, .pt, .safetensors or a diffusers folder")
    if not tensors:
        raise CheckpointError(f"{path}: holds no tensors")
    tensors = _drop_unused(tensors, path)
    if "encoder.conv_in.weight" in tensors:
        cfg = _infer_config_diffusers(tensors, metadata)
        tensors = {diffusers_to_original(k, cfg): v for k, v in tensors.items()}
        return tensors, metadata, "diffusers"
    if _is_taehv(tensors):
        return tensors, metadata, "taehv"
    if "encoder.conv1.weight" not in tensors:
        sample = ", ".join(sorted(tensors)[:3])
        raise CheckpointError(f"{path}: not a Wan VAE checkpoint (no encoder.conv1.weight or encoder.conv_in.weight; keys start {sample})")
    return tensors, metadata, "original"


def _drop_unused(tensors: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    import warnings

    unused = [k for k in tensors if k.startswith(UNUSED_PREFIXES)]
    if unused:
        prefixes = sorted({p for p in UNUSED_PREFIXES if any(k.startswith(p) for k in unused)})
        warnings.warn(
            CheckpointNote(f"{path.name}: skipped {len(unused)} tensor(s) under {', '.join(p + '*' for p in prefixes)}, which no inference layer reads"),
            stacklevel=3,
        )
    return {k: v for k, v in tensors.items() if not k.startswith(UNUSED_PREFIXES)}


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def _shape_of(tensor_slice) -> Tensor:
    """A meta tensor with a stored tensor's shape and dtype: what is known without reading it."""
    dtype = _SAFETENSORS_DTYPES.get(tensor_slice.get_dtype(), torch.float32)
    return torch.empty(tensor_slice.get_shape(), dtype=dtype, device="meta")


def _has_diffusers_names(path: Path) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return "encoder.conv_in.weight" in f.keys()
    except Exception:
        return False  # the read proper says what is wrong with the file


def _infer_config_diffusers(tensors: Mapping[str, Tensor], metadata: Mapping[str, str]) -> VAEConfig:
    """Enough of the config to map diffusers names (num_res_blocks decides the decoder indices)."""
    if "diffusers_config" in metadata:
        c = json.loads(metadata["diffusers_config"])
        return config_from_diffusers_json(c)
    n = 1 + max(int(m.group(1)) for k in tensors if (m := re.match(r"decoder\.up_blocks\.0\.resnets\.(\d+)\.", k)))
    if any(".downsampler." in k for k in tensors):  # Wan 2.2's residual blocks
        return dataclasses.replace(WAN22, num_res_blocks=n - 1)
    return VAEConfig(num_res_blocks=n - 1)


QWEN_CLASS = "AutoencoderKLQwenImage"


def config_from_diffusers_json(c: Mapping) -> VAEConfig:
    """Our config for diffusers' `AutoencoderKLWan` or `AutoencoderKLQwenImage` config."""
    base = VAEConfig()
    residual = bool(c.get("is_residual", False))
    p = c.get("patch_size") or 1
    if c.get("_class_name") == QWEN_CLASS or c.get("input_channels") is not None:
        # Qwen-Image's class: Wan 2.1's, with `input_channels` for both ends (4: RGBA).
        image_channels = out_channels = c.get("input_channels") or 3
        name = "qwen-image" if image_channels == 3 else "qwen-image-layered"
    else:
        # AutoencoderKLWan counts its end convs' channels after the patchify: 12 for Wan 2.2's
        # RGB; an upscaling head (12 out, Wan 2.1) gives more out than in.
        image_channels, out_channels = c.get("in_channels", 3 * p * p) // (p * p), c.get("out_channels", 3 * p * p) // (p * p)
        name = "wan2.2" if residual else "wan2.1"
    upscale = round((out_channels / image_channels) ** 0.5)
    if image_channels * upscale**2 != out_channels:
        raise CheckpointError(
            f"out_channels {out_channels * p * p} is not in_channels {image_channels * p * p} times a square: "
            "no decoder head of this architecture gives that"
        )
    if upscale > 1 and name == "wan2.1":
        name = f"wan2.1-upscale{upscale}x"
    return VAEConfig(
        dim=c.get("base_dim", base.dim),
        decoder_dim=c.get("decoder_base_dim"),
        z_dim=c.get("z_dim", base.z_dim),
        dim_mult=tuple(c.get("dim_mult", base.dim_mult)),
        num_res_blocks=c.get("num_res_blocks", base.num_res_blocks),
        attn_scales=tuple(c.get("attn_scales", base.attn_scales)),
        temporal_downsample=tuple(c.get("temperal_downsample", base.temporal_downsample)),
        dropout=c.get("dropout", base.dropout),
        patch_size=p,
        level_shortcuts=residual,
        upsample_halves=not residual,
        image_channels=image_channels,
        upscale=upscale,
        latents_mean=c.get("latents_mean"),
        latents_std=c.get("latents_std"),
        name=c.get("_wanvae_name") or name,
    )


def infer_config(tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None) -> VAEConfig:
    """The config of an original-layout state dict: from metadata if there, else from shapes."""
    metadata = metadata or {}
    if CONFIG_KEY in metadata:
        return VAEConfig.from_dict(json.loads(metadata[CONFIG_KEY]))
    if "diffusers_config" in metadata:
        return config_from_diffusers_json(json.loads(metadata["diffusers_config"]))
    if any(k.startswith("encoder.downsamples.0.downsamples.") for k in tensors):
        return _infer_levels(tensors)
    dim, image_channels = tensors["encoder.conv1.weight"].shape[:2]
    z_dim = _z_dim(tensors)
    upscale = _upscale(tensors, image_channels)
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
    cfg = VAEConfig(
        dim=dim,
        z_dim=z_dim,
        dim_mult=tuple(mult),
        num_res_blocks=res_blocks,
        attn_scales=tuple(attn),
        temporal_downsample=tuple(temporal),
        image_channels=image_channels,
        upscale=upscale,
    )
    # The published statistics come with z_dim 16 (the config's default); 0 and 1 otherwise.
    return dataclasses.replace(cfg, name=_name_from_shapes(cfg))


def _upscale(tensors: Mapping[str, Tensor], image_channels: int, patch: int = 1) -> int:
    """The decoder head's sub-pixels per pixel along a side: 1, or 2 for a 12-channel RGB head."""
    head = tensors.get("decoder.head.2.weight")
    if head is None:
        return 1
    ratio = head.shape[0] / (image_channels * patch * patch)
    upscale = round(ratio**0.5)
    if upscale < 1 or upscale * upscale != ratio:
        raise CheckpointError(
            f"decoder.head.2.weight gives {head.shape[0]} channels for {image_channels * patch * patch} in: "
            "a decoder head gives the input's channels, or those times a square (an upscaling head)"
        )
    return upscale


def _name_from_shapes(cfg: VAEConfig) -> str:
    """The published model these shapes are, where shapes can tell (they cannot tell
    Qwen-Image's RGB VAE from Wan 2.1's: only a config or metadata names it)."""
    standard = (cfg.dim_mult, cfg.num_res_blocks, cfg.temporal_downsample, cfg.attn_scales) == ((1, 2, 4, 4), 2, (False, True, True), ())
    if not standard:
        return "custom"
    if cfg.level_shortcuts:
        if (cfg.dim, cfg.z_dim, cfg.patch_size, cfg.image_channels, cfg.upscale) != (160, 48, 2, 3, 1):
            return "custom"
        return "wan2.2" if cfg.decoder_dim == 256 else "wan2.2-pruned-decoder"
    if cfg.z_dim != 16:
        return "custom"
    if cfg.dim == 96 and (cfg.image_channels, cfg.upscale) == (4, 1):
        return "qwen-image-layered"  # the only RGBA model of this architecture
    if cfg.dim == 96 and cfg.image_channels == 3:
        return "wan2.1" if cfg.upscale == 1 else f"wan2.1-upscale{cfg.upscale}x"
    if cfg.dim < 96 and (cfg.image_channels, cfg.upscale) == (3, 1):
        return "wan2.1-pruned"
    return "custom"


def _z_dim(tensors: Mapping[str, Tensor]) -> int:
    return tensors["conv2.weight"].shape[0] if "conv2.weight" in tensors else tensors["conv1.weight"].shape[0] // 2


def _infer_levels(tensors: Mapping[str, Tensor]) -> VAEConfig:
    """A Wan 2.2-layout state dict's config: levels nest their layers (`downsamples.N.downsamples.M`)."""
    conv_in = tensors["encoder.conv1.weight"]
    # Wan 2.2 patchifies RGB 2x2 (12 channels): an in-width that is not 3p^2 is not one of its files.
    dim, patch = conv_in.shape[0], round((conv_in.shape[1] / 3) ** 0.5)
    if 3 * patch * patch != conv_in.shape[1]:
        raise CheckpointError(f"encoder.conv1.weight takes {conv_in.shape[1]} channels: a Wan 2.2-layout file takes 3 x p^2 (12)")
    levels = sorted({int(m.group(1)) for k in tensors if (m := re.match(r"encoder\.downsamples\.(\d+)\.downsamples\.", k))})
    mult, temporal, res_blocks = [], [], 0
    for n in levels:
        prefix = f"encoder.downsamples.{n}.downsamples."
        layers = sorted({int(m.group(1)) for k in tensors if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))})
        blocks = [j for j in layers if prefix + f"{j}.residual.2.weight" in tensors]
        res_blocks = len(blocks)
        mult.append(tensors[prefix + f"{blocks[-1]}.residual.2.weight"].shape[0] // dim)
        if n != levels[-1]:
            temporal.append(prefix + f"{layers[-1]}.time_conv.weight" in tensors)
    z_dim = _z_dim(tensors)
    # A pruned decoder (LightVAE) is narrower than the encoder: its widths come from its own tensors.
    decoder_dim = tensors["decoder.head.0.gamma"].shape[0] // mult[0] if "decoder.head.0.gamma" in tensors else dim
    cfg = VAEConfig(
        dim=dim,
        decoder_dim=decoder_dim,
        z_dim=z_dim,
        dim_mult=tuple(mult),
        num_res_blocks=res_blocks,
        temporal_downsample=tuple(temporal),
        patch_size=patch,
        level_shortcuts=True,
        upsample_halves=False,
        upscale=_upscale(tensors, 3, patch),
    )
    # z_dim 48 brings the published Wan 2.2 statistics (the config's default).
    return dataclasses.replace(cfg, name=_name_from_shapes(cfg))


def load_state_dict_strict(vae: WanVAE, tensors: Mapping[str, Tensor], source: str = "checkpoint", assign: bool = False) -> None:
    """Copy tensors into `vae` (or, with `assign`, adopt them), refusing any missing,
    unexpected or mis-shaped key."""
    expected = vae.state_dict()
    _check_keys(expected.keys(), tensors, source, {k: tuple(v.shape) for k, v in expected.items()})
    vae.load_state_dict(tensors, strict=True, assign=assign)


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
    path: str | os.PathLike | torch.nn.Module,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    parts: str = "all",
    *,
    encoder_dtype: torch.dtype | None = None,
    decoder_dtype: torch.dtype | None = None,
) -> WanVAE | torch.nn.Module:
    """A `WanVAE` from an original `.pth`/`.safetensors`, a diffusers folder/file, or a
    diffusers `AutoencoderKLWan` object (its weights renamed in memory, not copied); for a
    TAEHV file (taew2_1, taew2_2, lighttae), a `model.taehv.TinyVAE` with the same calls.

    The config comes from the file's metadata, or is inferred from the tensor shapes.
    `parts='encoder'` (or 'decoder') keeps only that half: the other's weights are read,
    checked to be there, and dropped, so an encoding job does not hold the decoder.
    `dtype` is the precision of both parts; `encoder_dtype` / `decoder_dtype` set one
    part's (bf16 decoding loses little, bf16 encoding more: see the README's table).
    """
    vae = _load(path, device, dtype, parts)
    for part, part_dtype in (("encoder", encoder_dtype), ("decoder", decoder_dtype)):
        if part_dtype is not None and vae.parts in ("all", part):
            vae.cast(part, part_dtype)
    return vae


def _load(path, device, dtype: torch.dtype, parts: str) -> WanVAE:
    if not isinstance(path, torch.nn.Module) and read_checkpoint(path, keep=lambda key: False)[2] == "taehv":
        return load_taehv(path, device, dtype)
    keep = None
    if parts != "all":
        prefixes = ("encoder.", "conv1.") if parts == "encoder" else ("decoder.", "conv2.")
        keep = lambda key: key.startswith(prefixes)  # noqa: E731
    if isinstance(path, torch.nn.Module):
        return _load_module(path, device, dtype, parts, keep)
    tensors, metadata, _ = read_checkpoint(path, keep, verify=True)
    try:
        cfg = infer_config(tensors, metadata)
    except (KeyError, ValueError, UnboundLocalError, IndexError, ZeroDivisionError) as e:
        raise CheckpointError(f"{path}: cannot work out the model config from the checkpoint ({e}); {fit_report(tensors)}") from e
    said = CONFIG_KEY in metadata or "diffusers_config" in metadata
    return _build(cfg, tensors, str(path), said, device, dtype, parts, keep)


def _load_module(module: torch.nn.Module, device, dtype, parts: str, keep: KeyFilter | None) -> WanVAE:
    """`load` of a model object: our diffusers adapter (its WanVAE), or diffusers' own class."""
    if isinstance(getattr(module, "wan", None), WanVAE):
        module = module.wan
    if isinstance(module, WanVAE):
        if parts != "all" and module.parts != parts:
            raise ValueError(f"parts={parts!r} from a model object: load it from its checkpoint instead")
        return module.to(device=device, dtype=dtype).eval()
    if type(module).__name__ not in ("AutoencoderKLWan", QWEN_CLASS):
        raise CheckpointError(
            f"cannot load a {type(module).__name__}: expected a checkpoint path, a WanVAE, or diffusers' AutoencoderKLWan or {QWEN_CLASS}"
        )
    cfg = config_from_diffusers_json({**module.config, "_class_name": type(module).__name__})
    tensors = {diffusers_to_original(k, cfg): v.detach() for k, v in module.state_dict().items()}
    tensors = {k: (v if keep is None or keep(k) else v.to("meta")) for k, v in tensors.items()}
    return _build(cfg, tensors, f"the {type(module).__name__} object", True, device, dtype, parts, keep)


def _build(
    cfg: VAEConfig, tensors: dict[str, Tensor], source: str, config_said: bool, device, dtype, parts: str, keep: KeyFilter | None
) -> WanVAE:
    # The whole checkpoint must fit the full model, shapes included: a half load is no
    # excuse for accepting a file with missing or stray tensors.
    with torch.device("meta"):
        full = WanVAE(cfg).state_dict()
    try:
        _check_keys(full.keys(), tensors, source, {k: tuple(v.shape) for k, v in full.items()})
    except CheckpointError as e:
        if config_said:
            raise  # the file says what it is: what differs from that is the news
        raise CheckpointError(f"{source}: {fit_report(tensors)}") from e
    for key, tensor in tensors.items():  # the unused half too (a .pth maps it in; safetensors checked it as it streamed)
        check_finite(key, tensor, source)
    tensors = {k: v for k, v in tensors.items() if keep is None or keep(k)}
    _check_room(tensors, dtype, device, source)
    with torch.device("meta"):
        vae = WanVAE(cfg, parts=parts)
    # assign: the model takes the tensors read (or mapped) from the file instead of
    # copying them into weights of its own, so loading never holds the weights twice.
    load_state_dict_strict(vae, tensors, source=source, assign=True)
    vae.materialize_latent_stats()
    return vae.to(device=device, dtype=dtype).eval()


def _check_room(tensors: Mapping[str, Tensor], dtype: torch.dtype, device, source: str) -> None:
    """Refuse, before allocating, a model the machine has no memory for."""
    from ..coding.tiling import available_memory

    device = torch.device(device)
    if device.type not in ("cpu", "cuda") or (device.type == "cuda" and not torch.cuda.is_available()):
        return  # the move to the device says what is wrong with it
    needed = sum(t.numel() for t in tensors.values()) * torch.empty((), dtype=dtype).element_size()
    # Tensors already read in the target dtype on the CPU are taken as they are (assign).
    held = sum(t.numel() * t.element_size() for t in tensors.values() if not t.is_meta and t.dtype == dtype) if device.type == "cpu" else 0
    free = available_memory(device)
    if needed - held > free:
        raise CheckpointError(
            f"{source}: the model needs {needed / 2**30:.1f} GiB as {str(dtype).removeprefix('torch.')} on {device}, "
            f"and {free / 2**30:.1f} GiB is free"
        )


def describe(path: str | os.PathLike) -> dict:
    """What `wanvae info` says of a checkpoint: format, family, config, and whether the
    tensors fit it; reads shapes, not weights."""
    tensors, metadata, fmt = read_checkpoint(path, keep=lambda key: False)
    result = {
        "kind": "checkpoint",
        "format": fmt,
        "tensors": len(tensors),
        "parameters": sum(t.numel() for t in tensors.values()),
        "dtypes": sorted({str(t.dtype).removeprefix("torch.") for t in tensors.values()}),
    }
    if _is_taehv(tensors):
        try:
            cfg = taehv_config(tensors, path)
            _taehv_state(tensors, cfg, path)
        except CheckpointError as e:
            return {**result, "family": "TAEHV", "fits": False, "problem": str(e)}
        takes = "raw latents (the VAE's mean)" if cfg.raw_latents else "normalised latents"
        return {**result, "family": cfg.family, "model": f"TAEHV tiny autoencoder {cfg.name}, taking {takes}", "fits": True,
                "config": dataclasses.asdict(cfg)}
    try:
        cfg = infer_config(tensors, metadata)
        with torch.device("meta"):
            full = WanVAE(cfg).state_dict()
        _check_keys(full.keys(), tensors, "the tensors", {k: tuple(v.shape) for k, v in full.items()})
    except (CheckpointError, KeyError, ValueError, UnboundLocalError, IndexError, ZeroDivisionError) as e:
        why = str(e) if isinstance(e, CheckpointError) and (CONFIG_KEY in metadata or "diffusers_config" in metadata) else fit_report(tensors)
        return {**result, "family": None, "fits": False, "problem": why}
    return {**result, "family": cfg.family, "model": cfg.description, "fits": True, "config": cfg.to_dict()}


def peek_config(path: str | os.PathLike) -> VAEConfig:
    """A checkpoint's config from its metadata or its tensors' shapes, reading no weights."""
    tensors, metadata, _ = read_checkpoint(path, keep=lambda key: False)
    if _is_taehv(tensors):
        return taehv_config(tensors, path)
    try:
        return infer_config(tensors, metadata)
    except (KeyError, ValueError, UnboundLocalError, IndexError, ZeroDivisionError) as e:
        raise CheckpointError(f"{path}: cannot work out the model config from the checkpoint ({e}); {fit_report(tensors)}") from e


def fit_report(tensors: Mapping[str, Tensor]) -> str:
    """Why a state dict fits neither released model: what differs from each, in one line."""
    from ..config import preset

    reports = []
    for name in ("wan2.1", "wan2.2"):
        cfg = preset(name)
        with torch.device("meta"):
            expected = WanVAE(cfg).state_dict()
        try:
            _check_keys(expected.keys(), tensors, f"as {cfg.family}", {k: tuple(v.shape) for k, v in expected.items()})
        except CheckpointError as e:
            reports.append(str(e).replace(" does not fit the model", ""))
        else:
            return f"it fits {cfg.family}"
    return "fits no known Wan VAE: " + "; ".join(reports)


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
    """diffusers' config for `cfg`: `AutoencoderKLQwenImage`'s for a Qwen-Image VAE, else
    `AutoencoderKLWan`'s (which ties Wan 2.2's shortcuts and width-keeping up-samplers
    together under `is_residual`, and counts its end convs' channels after the patchify)."""
    if cfg.level_shortcuts == cfg.upsample_halves:
        raise ValueError("diffusers' AutoencoderKLWan has level shortcuts exactly when its up-samplers keep their width")
    common = {
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
    if cfg.name.startswith("qwen-image") and cfg.upscale == 1 and not cfg.level_shortcuts and cfg.decoder_dim == cfg.dim:
        return {"_class_name": QWEN_CLASS, "_diffusers_version": "0.35.0", **common, "input_channels": cfg.image_channels}
    family = {}
    if cfg.level_shortcuts or cfg.patch_size != 1 or cfg.decoder_dim != cfg.dim:
        p = cfg.patch_size
        family = {
            "decoder_base_dim": cfg.decoder_dim,
            "is_residual": cfg.level_shortcuts,
            "patch_size": p if p > 1 else None,
            "scale_factor_spatial": cfg.spatial_ratio,
            "scale_factor_temporal": cfg.temporal_ratio,
        }
    if family or cfg.image_channels != 3 or cfg.upscale != 1:
        family = {**family, "in_channels": cfg.in_channels, "out_channels": cfg.out_channels}
    return {"_class_name": "AutoencoderKLWan", "_diffusers_version": "0.33.1", **family, **common}


def _save_diffusers(state: Mapping[str, Tensor], cfg: VAEConfig, path: Path) -> Path:
    from safetensors.torch import save_file

    renamed = {original_to_diffusers(k, cfg): v for k, v in state.items()}
    with atomic_dir(path) as tmp:
        save_file(renamed, str(tmp / DIFFUSERS_WEIGHTS), metadata={"format": "pt"})
        # diffusers ignores config keys that start with "_": the name rides along, so a
        # round trip through diffusers' layout gives the checkpoint its name back.
        config = {**diffusers_config(cfg), "_wanvae_name": cfg.name}
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
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


# ---- TAEHV (madebyollin's tiny autoencoders): told from Wan's by their keys -----------------------
def _is_taehv(tensors: Mapping[str, Tensor]) -> bool:
    """TAEHV files number their layers (`encoder.0.weight`, `decoder.1.weight`); Wan's name them."""
    return "encoder.0.weight" in tensors and "encoder.conv1.weight" not in tensors


def taehv_config(tensors: Mapping[str, Tensor], path: str | os.PathLike = ""):
    """A TAEHV file's config from its shapes (and, for LightX2V's raw-latent files, its name)."""
    from ..model.taehv import TinyConfig

    name = Path(str(path)).stem or "taehv"
    # The super decoder starts with a 1x1 conv and a ConvNeXt-style block (its depthwise conv
    # at decoder.1.conv.0); the base one with a clamp, then a 3x3 conv at decoder.1.
    variant = "super" if "decoder.1.conv.0.weight" in tensors else "base"
    try:
        patch = round((tensors["encoder.0.weight"].shape[1] / 3) ** 0.5)
        z_dim = tensors["decoder.0.weight" if variant == "super" else "decoder.1.weight"].shape[1]
        pools = sorted(int(k.split(".")[1]) for k in tensors if re.fullmatch(r"encoder\.\d+\.conv\.weight", k))
        encoder_time = tuple(tensors[f"encoder.{i}.conv.weight"].shape[1] == 2 * tensors[f"encoder.{i}.conv.weight"].shape[0] for i in pools)
    except (KeyError, IndexError) as e:
        raise CheckpointError(f"{path}: looks like a TAEHV file but lacks {e}") from None
    return TinyConfig(z_dim=z_dim, patch_size=patch, encoder_time=encoder_time, raw_latents="lighttae" in name.lower(),
                      decoder_variant=variant, name=name)


def _taehv_state(tensors: Mapping[str, Tensor], cfg, path) -> dict[str, Tensor]:
    """The file's tensors checked against the model's keys and shapes (one published tolerance:
    an oversized TGrow weight, of which the last channels are kept)."""
    from ..model.taehv import TinyVAE, patch_tgrow

    with torch.device("meta"):
        want = TinyVAE(cfg).state_dict()
    state = patch_tgrow(dict(tensors), want)
    missing, unexpected = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    wrong = [f"{k} {tuple(state[k].shape)}, model wants {tuple(want[k].shape)}" for k in want if k in state and state[k].shape != want[k].shape]
    if missing or unexpected or wrong:
        said = [f"missing {missing[:3]}" if missing else "", f"unexpected {unexpected[:3]}" if unexpected else "", wrong[0] if wrong else ""]
        raise CheckpointError(f"{path}: not a TAEHV checkpoint wanvae can build: " + "; ".join(x for x in said if x))
    return state


def load_taehv(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """A `model.taehv.TinyVAE` from a taew2_1 / taew2_2 / lighttae `.pth` or `.safetensors`."""
    from ..model.taehv import TinyVAE

    tensors, _, _ = read_checkpoint(path, None, verify=True)
    cfg = taehv_config(tensors, path)
    state = _taehv_state(tensors, cfg, path)
    vae = TinyVAE(cfg)
    vae.load_state_dict(state, strict=True)
    return vae.to(device=device, dtype=dtype or torch.float32).eval()
