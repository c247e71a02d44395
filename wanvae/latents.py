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
    path: str | os.PathLike, latents: Tensor, metadata: dict[str, Any] | None = None, *, overwrite: bool = True
) -> Path:
    """Write one clip's latents ([1, 16, t, h, w] or [16, t, h, w]) as .safetensors or .pt.

    Metadata values are stored as strings (non-strings as JSON). The file appears whole
    or not at all.
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
    tensor = latents.detach().to("cpu").contiguous()
    with atomic_path(path, overwrite=overwrite) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file({"latents": tensor}, str(tmp), metadata=meta)
        else:
            torch.save({"latents": tensor, "metadata": meta}, str(tmp))
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
                return f.get_tensor("latents")[None], dict(f.metadata() or {})
        if path.suffix in (".pt", ".pth"):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
            if not isinstance(obj, dict) or "latents" not in obj:
                raise ValueError(f"{path}: not a wanvae latents file (no 'latents' entry)")
            return obj["latents"][None], dict(obj.get("metadata") or {})
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(f"{path}: not a readable latents file ({e})") from e
    raise ValueError(f"{path}: latents files are .safetensors or .pt")
