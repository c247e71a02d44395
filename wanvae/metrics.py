"""Reconstruction quality: PSNR and SSIM per frame, on pixels in [-1, 1]."""

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
