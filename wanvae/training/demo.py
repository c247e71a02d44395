"""The bundled demo model and the held-out clip `wanvae demo` shows it on."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
from torch import Tensor

DEMO_WEIGHTS = "demo.safetensors"
HELD_OUT_IMAGE = "chelsea.jpg"


def asset(name: str) -> Path:
    return Path(str(resources.files("wanvae") / "assets" / name))


def demo_model(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """The small trained model shipped inside the package (same architecture and latent
    layout as Wan 2.1, narrower). Its latents are not Wan's latents."""
    from ..io.weights import CheckpointError, load

    path = asset(DEMO_WEIGHTS)
    if not path.exists():
        raise CheckpointError(f"{path}: the demo model is not bundled in this installation")
    return load(path, device=device, dtype=dtype)


def held_out_clip(frames: int = 17, size: tuple[int, int] = (256, 256), seed: int = 7) -> Tensor:
    """A clip [3, T, H, W] of a photo the demo model never saw, filmed by a moving camera."""
    from .clips import camera_clip, load_image

    g = torch.Generator().manual_seed(seed)
    return camera_clip(load_image(asset(HELD_OUT_IMAGE)), frames, size, g)


# The clips the model card's numbers are measured on (and the test checks against it).
CARD_SEEDS = (1, 2, 3, 4)


def card_clips() -> list[Tensor]:
    """Held-out 256x256, 17-frame clips: the bundled photo under four camera moves."""
    return [held_out_clip(17, (256, 256), seed) for seed in CARD_SEEDS]


# 49 frames are 13 latent frames: the causal state runs far past the 17-frame clips the model
# first trained on (it fell from 29 dB in the first frames to 15 dB in the last on these).
LONG_CLIP_FRAMES = 49


def long_clip(seed: int) -> Tensor:
    """A held-out 256x256, 49-frame clip; its camera move is drawn for the longer clip, so it
    does not extend the 17-frame clip of the same seed."""
    return held_out_clip(LONG_CLIP_FRAMES, (256, 256), seed)


def long_clips() -> list[Tensor]:
    """The bundled photo under the card's four camera moves, as long clips."""
    return [long_clip(seed) for seed in CARD_SEEDS]
