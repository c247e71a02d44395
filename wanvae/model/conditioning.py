"""Wan's image-to-video conditioning clip, encoded at a fraction of its cost.

The clip is the first frame, then zero frames (and, for first-and-last-frame models, the
last frame at the end). After the first frame the input is constant, and a temporal layer
whose whole window is one repeated frame gives that same frame at every step: the steps
run with `skip_constant`, so each layer computes it once. Once a step leaves the causal
state exactly as it found it, the remaining steps are copies. The result equals `encode`
of the whole clip; only the public step API of the model is used.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import checks
from ..coding.heap import reuse_heap
from ..coding.state import CausalState


def conditioning_moments(vae, first: Tensor, last: Tensor | None, num_frames: int) -> tuple[tuple[Tensor, Tensor], int]:
    """Raw (mean, logvar) of the conditioning clip, and how many encoder steps were computed."""
    vae.require("encoder")
    dtype = vae.part_dtype("encoder")
    first = checks.check_video(first, vae.config, dtype)
    if first.shape[2] != 1:
        raise ValueError(f"first must be one frame, [B, 3, H, W] (or [B, 3, 1, H, W]); got {tuple(first.shape)}")
    r = vae.config.temporal_ratio
    if num_frames < 1 or (num_frames - 1) % r:
        raise ValueError(checks.frame_count_error(num_frames, r))
    if last is not None:
        last = checks.check_video(last, vae.config, dtype)
        if last.shape[2] != 1 or last.shape[0] != first.shape[0] or last.shape[3:] != first.shape[3:]:
            raise ValueError(f"last must be one frame shaped like first {tuple(first.shape)}; got {tuple(last.shape)}")
        if num_frames < 1 + r:
            raise ValueError(f"first-and-last conditioning needs at least {1 + r} frames, got {num_frames}")
    with reuse_heap(first.device.type == "cpu"):
        return _steps(vae, first, last, num_frames)


def _steps(vae, first: Tensor, last: Tensor | None, num_frames: int) -> tuple[tuple[Tensor, Tensor], int]:
    r = vae.config.temporal_ratio
    moments, state = vae.encode_step(first, CausalState())
    steps = [moments]
    blank = torch.zeros_like(first).expand(-1, -1, r, -1, -1).contiguous()
    chunks = (num_frames - 1) // r - (1 if last is not None else 0)
    computed = 1
    while len(steps) - 1 < chunks:
        moments, after = vae.encode_step(blank, state, skip_constant=True)
        computed += 1
        steps.append(moments)
        if after.same_history(state):  # a fixed point: the remaining steps would all be this one
            steps.extend([moments] * (chunks - (len(steps) - 1)))
            break
        state = after
    if last is not None:
        tail = torch.cat([blank[:, :, : r - 1], last], dim=2)
        moments, _ = vae.encode_step(tail, state, skip_constant=True)
        computed += 1
        steps.append(moments)
    mean = torch.cat([m for m, _ in steps], dim=2)
    logvar = torch.cat([lv for _, lv in steps], dim=2)
    return (mean, logvar), computed
