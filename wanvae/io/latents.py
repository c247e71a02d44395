"""The latents file: one tensor `latents` [16, t, h, w] plus string metadata, written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .atomic import atomic_path

LATENT_SUFFIXES = (".safetensors", ".pt", ".pth")


def _as_str(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def save_latents(
    path: str | os.PathLike, latents: Tensor, metadata: dict[str, Any] | None = None, *, overwrite: bool = True,
    extra: dict[str, Tensor] | None = None,
) -> Path:
    """Write one clip's latents ([1, 16, t, h, w] or [16, t, h, w]) as .safetensors or .pt.

    Metadata values are stored as strings (non-strings as JSON). `extra` tensors are stored
    beside `latents` under their own names (the cache's image-to-video `conditioning` and
    `conditioning_mask`). The file appears whole or not at all.
    """
    path = Path(path)
    if path.suffix not in LATENT_SUFFIXES:
        raise ValueError(f"{path}: latents are written as .safetensors or .pt")
    if latents.dim() == 5:
        if latents.shape[0] != 1:
            raise ValueError(f"a latents file holds one clip; got a batch of {latents.shape[0]}")
        latents = latents[0]
    if latents.dim() != 4:
        raise ValueError(f"latents must be [16, t, h, w] (or [1, 16, t, h, w]), got {tuple(latents.shape)}")
    meta = {k: _as_str(v) for k, v in (metadata or {}).items()}
    tensors = {"latents": latents, **(extra or {})}
    if "metadata" in tensors:
        raise ValueError("'metadata' is not a tensor name a latents file can hold")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path, overwrite=overwrite) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(tensors, str(tmp), metadata=meta)
        else:
            torch.save({**tensors, "metadata": meta}, str(tmp))
    return path


def load_latents(path: str | os.PathLike) -> tuple[Tensor, dict[str, str]]:
    """(latents [1, 16, t, h, w], metadata) from a file written by `save_latents`."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                if "latents" not in f.keys():
                    raise ValueError(f"{path}: has no 'latents' tensor (tensors: {', '.join(sorted(f.keys())[:5])})")
                latents, meta = f.get_tensor("latents"), dict(f.metadata() or {})
        elif path.suffix in (".pt", ".pth"):
            import pickle
            import warnings

            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    obj = torch.load(str(path), map_location="cpu", weights_only=True)
            except pickle.UnpicklingError:
                raise ValueError(f"{path}: holds pickled Python objects, not only tensors; wanvae never unpickles objects") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("latents"), Tensor):
                raise ValueError(f"{path}: not a wanvae latents file (no 'latents' tensor)")
            raw = obj.get("metadata") or {}
            if not isinstance(raw, dict):
                raise ValueError(f"{path}: its 'metadata' is a {type(raw).__name__}, not a dict of strings")
            latents, meta = obj["latents"], {str(k): str(v) for k, v in raw.items()}
        else:
            raise ValueError(f"{path}: latents files are .safetensors or .pt")
    except ValueError:
        raise
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: not a readable latents file ({reason})") from None
    if latents.dim() != 4:
        raise ValueError(f"{path}: latents must be [C, t, h, w] (one clip), got {latents.dim()} dims {tuple(latents.shape)}")
    if not latents.is_floating_point():
        raise ValueError(f"{path}: latents must be floating point, got {str(latents.dtype).removeprefix('torch.')}")
    if 0 in latents.shape:
        raise ValueError(f"{path}: latents are empty: shape {tuple(latents.shape)}")
    if not bool(torch.isfinite(latents).all()):
        raise ValueError(f"{path}: latents hold NaN or infinity")
    return latents[None], meta


def metadata_warnings(meta: dict[str, str], shape: tuple[int, ...], spatial_ratio: int, temporal_ratio: int,
                      checkpoint_sha256: str | None = None) -> list[str]:
    """What a latents file's metadata says that its tensor, or the decoding checkpoint,
    contradicts: one line each. Decoding still makes sense (the tensor is what decodes),
    so these are warnings; a tensor that cannot decode at all is refused elsewhere."""
    import math

    notes = []
    _, _, t, h, w = shape
    fps = meta.get("fps")
    if fps is not None:
        try:
            value = float(fps)
        except ValueError:
            value = float("nan")
        if not (math.isfinite(value) and 0 < value <= 1000):
            notes.append(f"its metadata fps {fps!r} is not a frame rate in (0, 1000]; ignoring it")
    frames = meta.get("frames")
    decoded = 1 + temporal_ratio * (t - 1)
    if frames and frames.isdigit() and int(frames) != decoded:
        notes.append(f"its metadata says {frames} frames, but its {t} latent frames decode to {decoded}")
    size = meta.get("size", "")
    if "x" in size and size != f"{w * spatial_ratio}x{h * spatial_ratio}":
        notes.append(f"its metadata says {size}, but its latents decode to {w * spatial_ratio}x{h * spatial_ratio} "
                     "with this checkpoint (encoded with the other model family?)")
    source = meta.get("checkpoint_sha256")
    if source and checkpoint_sha256 and source != checkpoint_sha256:
        notes.append(f"it was encoded with checkpoint {source[:12]}, not the {checkpoint_sha256[:12]} decoding it")
    return notes
