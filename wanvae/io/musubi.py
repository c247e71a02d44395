"""musubi-tuner's latent cache for Wan: file names, tensor keys and metadata, as its trainer reads them.

Written from musubi-tuner's rules (kohya-ss/musubi-tuner `dataset/cache_io.py` writes,
`dataset/image_video_dataset.py` reads):

- one `.safetensors` per clip, named `{stem}_{pos:05d}-{frames:03d}_{W:04d}x{H:04d}_wan.safetensors`
  (a video clip: `pos` its first frame, `frames` its pixel frames) or `{stem}_{W:04d}x{H:04d}_wan.safetensors`
  (an image), W x H the SOURCE's size, from which the trainer recomputes the bucket. The
  trainer splits the name on `_` from the right, so a stem keeps its underscores; the rest
  of the name is the item key its text-encoder cache `{stem}_wan_te.safetensors` must carry;
- `latents_{F}x{H}x{W}_{dtype}`: the normalised mean [16, F, H, W] (latent units);
  `latents_image_{F}x{H}x{W}_{dtype}`: for image-to-video, a 4-channel mask then the
  normalised latents of the conditioning clip, [20, F, H, W];
- metadata `architecture` = `wan`, `width` and `height` (the source's size), `format_version`
  = `1.0.1`, and `frame_count` (pixel frames) for videos.

An image dataset and a video dataset of musubi each read every `*_wan.safetensors` of their
cache folder, and an image dataset mis-keys a video clip's file: images and videos go to
separate folders (`IMAGE_FOLDER`, `VIDEO_FOLDER`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .atomic import atomic_path

ARCHITECTURE = "wan"
FORMAT_VERSION = "1.0.1"
SUFFIX = f"_{ARCHITECTURE}.safetensors"
IMAGE_FOLDER, VIDEO_FOLDER = "images", "videos"
# musubi's own names for the dtypes it writes (`utils.model_utils.dtype_to_str`).
DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}
# The latent channels of its Wan cache: the Wan 2.1 VAE's (Wan 2.1, SkyReels-V2, Wan 2.2 A14B).
LATENT_CHANNELS = 16


def cache_name(stem: str, source_size: tuple[int, int], start: int | None = None, frames: int | None = None) -> str:
    """The file name of one clip (`start`/`frames` given) or one image, in its folder."""
    w, h = source_size
    frame_part = "" if frames is None else f"_{start:05d}-{frames:03d}"
    name = f"{stem}{frame_part}_{w:04d}x{h:04d}{SUFFIX}"
    return f"{VIDEO_FOLDER if frames is not None else IMAGE_FOLDER}/{name}"


def latents_key(prefix: str, shape: tuple[int, ...], dtype: torch.dtype) -> str:
    """`latents_FxHxW_dtype` (or `latents_image_...`) for a [C, F, H, W] tensor."""
    _, f, h, w = shape
    return f"{prefix}_{f}x{h}x{w}_{DTYPE_NAMES[dtype]}"


def conditioning_mask(pixel_frames: int, latent_shape: tuple[int, int, int], last: bool = False) -> Tensor:
    """Wan's image-to-video mask [4, F, h, w]: 1 where a pixel frame is given (the first, and the
    last for first-and-last-frame models), its first frame counted four times so that each
    latent frame folds four pixel frames into the four channels."""
    f, h, w = latent_shape
    given = torch.zeros(pixel_frames)
    given[0] = 1.0
    if last:
        given[-1] = 1.0
    given = torch.cat([given[:1].repeat(3), given])  # 4F values
    return given.view(f, 4).t().contiguous()[:, :, None, None].expand(4, f, h, w).contiguous()


def write_clip(
    path: str | os.PathLike, latents: Tensor, *, source_size: tuple[int, int], frame_count: int | None,
    conditioning: Tensor | None = None, mask: Tensor | None = None, dtype: torch.dtype = torch.bfloat16,
    extra_metadata: dict[str, str] | None = None,
) -> Path:
    """Write one clip's cache file atomically: `latents` [16, F, h, w] (normalised), and with
    `conditioning` (its normalised latents, [16, F, h, w]) and `mask` [4, F, h, w] the
    image-to-video tensor. `extra_metadata` rides along (musubi reads only its own keys)."""
    from safetensors.torch import save_file

    if latents.dim() != 4 or latents.shape[0] != LATENT_CHANNELS:
        raise ValueError(f"musubi-tuner's Wan cache holds [{LATENT_CHANNELS}, F, h, w] latents, got {tuple(latents.shape)}")
    tensors = {latents_key("latents", tuple(latents.shape), dtype): latents.to(dtype).contiguous()}
    if conditioning is not None:
        image = torch.cat([mask.to(conditioning.dtype), conditioning]).to(dtype).contiguous()
        tensors[latents_key("latents_image", tuple(latents.shape), dtype)] = image
    metadata = {**(extra_metadata or {}), "architecture": ARCHITECTURE, "width": str(source_size[0]),
                "height": str(source_size[1]), "format_version": FORMAT_VERSION}
    if frame_count is not None:
        metadata["frame_count"] = str(frame_count)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


@dataclass(frozen=True)
class CacheName:
    """What a cache file's name says, split as musubi's trainer splits it."""

    item_key: str  # what its text-encoder cache is named after
    source_size: tuple[int, int]
    start: int | None  # None for an image
    frames: int | None


_SIZE = re.compile(r"^(\d{4,})x(\d{4,})$")
_FRAMES = re.compile(r"^(\d{5,})-(\d{3,})$")


def parse_name(name: str) -> CacheName:
    """Split a cache file name from the right, as the trainer does; ValueError if it is not one."""
    if not name.endswith(SUFFIX):
        raise ValueError(f"{name}: not a musubi-tuner Wan cache name (*{SUFFIX})")
    tokens = name.split("_")
    size = _SIZE.match(tokens[-2]) if len(tokens) >= 3 else None
    if size is None:
        raise ValueError(f"{name}: no WxH source size before {SUFFIX}")
    frames = _FRAMES.match(tokens[-3]) if len(tokens) >= 4 else None
    if frames is not None:
        return CacheName("_".join(tokens[:-3]), (int(size[1]), int(size[2])), int(frames[1]), int(frames[2]))
    return CacheName("_".join(tokens[:-2]), (int(size[1]), int(size[2])), None, None)


def text_encoder_cache_name(item_key: str) -> str:
    """The text-encoder cache musubi's trainer pairs a clip with (written by its own script)."""
    return f"{item_key}_{ARCHITECTURE}_te.safetensors"


_KEY = re.compile(r"^(?P<kind>latents(?:_image)?)_(?P<f>\d+)x(?P<h>\d+)x(?P<w>\d+)_(?P<dtype>bfloat16|float16|float32)$")


def read_clip(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors of one cache file under musubi's batch keys (`latents`, `latents_image`: the
    shape and dtype suffixes stripped, as its batch manager does, after checking they are
    true), and its metadata."""
    from safetensors import safe_open

    out: dict[str, Tensor] = {}
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        for key in f.keys():
            m = _KEY.match(key)
            if m is None:
                raise ValueError(f"{path}: tensor {key!r} is not latents_FxHxW_dtype or latents_image_FxHxW_dtype")
            tensor = f.get_tensor(key)
            if tuple(tensor.shape[1:]) != (int(m["f"]), int(m["h"]), int(m["w"])) or DTYPE_NAMES[tensor.dtype] != m["dtype"]:
                raise ValueError(f"{path}: {key} holds {tuple(tensor.shape)} {tensor.dtype}, not what its name says")
            out[m["kind"]] = tensor
    return out, metadata
