"""Shared helpers: random weights at a sane scale, and diffusers as the reference."""

from __future__ import annotations

import pytest
import torch

import wanvae
from wanvae import VAEConfig, WanVAE
from wanvae.testing import randomize, reference_decode_unclamped, reference_for  # noqa: F401

torch.set_num_threads(max(1, torch.get_num_threads()))

TINY = VAEConfig(dim=8, name="tiny")


def random_vae(cfg: VAEConfig = TINY, seed: int = 0) -> WanVAE:
    return randomize(WanVAE(cfg), seed)


def random_video(b: int, t: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A smooth-ish random clip in [-1, 1], [B, 3, T, H, W]."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, h, w, generator=g) * 2 - 1


@pytest.fixture(scope="session")
def tiny_vae() -> WanVAE:
    return random_vae(TINY, seed=1)


@pytest.fixture(scope="session")
def full_vae() -> WanVAE:
    return random_vae(wanvae.VAEConfig(), seed=2)


@pytest.fixture(scope="session")
def tiny_vae64() -> WanVAE:
    """In float64 the chunked and one-pass paths agree to ~1e-15: exactness, not luck."""
    return random_vae(TINY, seed=1).double()
