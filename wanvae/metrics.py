"""Reconstruction quality on pixels in [-1, 1]: PSNR and SSIM per frame, and how much of an error is colour."""

from __future__ import annotations

import torch
from torch import Tensor


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Per-frame PSNR in dB of [..., 3, T, H, W] clips in [-1, 1] (peak-to-peak 2)."""
    mse = (a.float() - b.float()).pow(2).mean(dim=(-4, -2, -1))
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-12))


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Per-frame SSIM (11x11 Gaussian window) of [3, T, H, W] clips in [-1, 1]."""
    from pytorch_msssim import ssim as _ssim

    x = (a.float().transpose(0, 1) + 1) / 2  # [T, 3, H, W] in [0, 1]
    y = (b.float().transpose(0, 1) + 1) / 2
    return _ssim(x, y, data_range=1.0, size_average=False)


def coarse_colour_error(err: Tensor, window: int = 17) -> Tensor:
    """The colour part of an error [N, 3, H, W] averaged over `window` x `window` neighbourhoods.

    Colour is the error's part orthogonal to grey (each pixel's error minus its channel mean);
    averaging keeps a wrong hue over a whole region (which a model can learn) and cancels the
    colour fringes at edges.
    """
    chroma = err - err.mean(1, keepdim=True)
    return torch.nn.functional.avg_pool2d(chroma, window, 1, window // 2, count_include_pad=False)


def colour_share(a: Tensor, b: Tensor, coarse: int = 17) -> tuple[float, float]:
    """How much of the squared error between [3, T, H, W] clips is colour, not brightness:
    (share of all of it, share of it that is colour at the scale of `coarse` pixels; see
    `coarse_colour_error`).
    """
    err = (a.float() - b.float()).transpose(0, 1)  # [T, 3, H, W]
    chroma = err - err.mean(1, keepdim=True)
    total = err.pow(2).mean().clamp_min(1e-20)
    return float(chroma.pow(2).mean() / total), float(coarse_colour_error(err, coarse).pow(2).mean() / total)
