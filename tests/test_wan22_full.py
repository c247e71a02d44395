"""Full-size Wan 2.2 against diffusers, random weights (704.7 M parameters, two copies: ~6 GB).

Slow-marked: `python -m pytest -m slow tests/test_wan22_full.py`.
"""

from __future__ import annotations

import pytest
import torch

import wanvae
from wanvae.model.layers import unpatchify
from wanvae.testing import randomize, reference_decode_unclamped, reference_for
from conftest import random_video

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pair():
    vae = randomize(wanvae.WanVAE(wanvae.preset("wan2.2")), seed=2022)
    return vae, reference_for(vae)


@pytest.mark.parametrize("frames", [1, 5, 9])
def test_full_size_encode_and_decode_match_diffusers(pair, frames):
    vae, ref = pair
    x = random_video(1, frames, 48, 80, seed=frames)  # 80x48: 5x3 latents, the shortcuts pad and drop frames
    with torch.no_grad():
        dist = ref.encode(x).latent_dist
    mean, logvar = vae.encode_moments(x)
    errors = {"mean": (mean - dist.mean).abs().max().item(), "logvar": (logvar - dist.logvar).abs().max().item()}
    z = torch.randn(mean.shape, generator=torch.Generator().manual_seed(frames))
    ours = vae.decode(vae.normalize(z), clamp=False)
    theirs = unpatchify(reference_decode_unclamped(ref, z), 2)
    errors["decode"] = (ours - theirs).abs().max().item()
    print(f"{frames} frames at 80x48: max abs diff {errors}; decoded pixels span {theirs.abs().max().item():.2f}")
    assert all(e < 1e-4 for e in errors.values()), errors
