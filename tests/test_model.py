"""The model against the reference: checkpoint layout, and numbers against diffusers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import wanvae
from conftest import TINY, random_vae, random_video, reference_decode_unclamped, reference_for

KEYS = json.loads((Path(__file__).parent / "data" / "wan21_vae_keys.json").read_text())


def test_state_dict_is_the_original_checkpoint_layout():
    sd = wanvae.WanVAE().state_dict()
    assert list(sd) == list(KEYS["tensors"])  # same keys, same order
    assert {k: list(v.shape) for k, v in sd.items()} == KEYS["tensors"]
    assert sum(v.numel() for v in sd.values()) == KEYS["num_parameters"] == 126_892_531


def test_compression_ratios_and_frame_counts():
    cfg = wanvae.VAEConfig()
    assert (cfg.spatial_ratio, cfg.temporal_ratio) == (8, 4)
    assert [cfg.latent_frames(t) for t in (1, 5, 9, 81, 97)] == [1, 2, 3, 21, 25]
    assert [cfg.pixel_frames(t) for t in (1, 2, 21, 25)] == [1, 5, 81, 97]


@pytest.fixture(scope="module")
def full_pair(full_vae):
    return full_vae, reference_for(full_vae)


def test_full_size_encode_matches_diffusers(full_pair):
    vae, ref = full_pair
    x = random_video(1, 9, 32, 48, seed=3)
    mean, logvar = vae.encode_moments(x)
    with torch.no_grad():
        dist = ref.encode(x).latent_dist
    assert mean.shape == (1, 16, 3, 4, 6)
    assert (mean - dist.mean).abs().max() < 1e-4
    assert (logvar - dist.logvar).abs().max() < 1e-4
    # encode() is the normalised mean, as the original returns; no sampling.
    z = vae.encode(x)
    mu = torch.tensor(vae.config.latents_mean).view(1, 16, 1, 1, 1)
    sd = torch.tensor(vae.config.latents_std).view(1, 16, 1, 1, 1)
    torch.testing.assert_close(z, (dist.mean - mu) / sd, atol=1e-4, rtol=0)


def test_full_size_decode_matches_diffusers(full_pair):
    vae, ref = full_pair
    g = torch.Generator().manual_seed(4)
    z_raw = torch.randn(1, 16, 3, 4, 6, generator=g)
    ours = vae.decode(vae.normalize(z_raw), clamp=False)
    theirs = reference_decode_unclamped(ref, z_raw)
    assert ours.shape == theirs.shape == (1, 3, 9, 32, 48)
    assert theirs.abs().max() > 1.0  # random weights overshoot: the comparison is unclamped
    assert (ours - theirs).abs().max() < 1e-4
    # The clamped decode is the reference's public decode.
    with torch.no_grad():
        public = ref.decode(z_raw).sample
    assert (vae.decode(vae.normalize(z_raw)) - public).abs().max() < 1e-4


def test_tiny_config_longer_clip_matches_diffusers():
    """Five latent frames: exercises the decoder's first-frame and second-frame quirks."""
    vae = random_vae(TINY, seed=5)
    ref = reference_for(vae)
    x = random_video(1, 17, 32, 32, seed=6)
    mean, logvar = vae.encode_moments(x)
    with torch.no_grad():
        dist = ref.encode(x).latent_dist
    assert mean.shape == (1, 16, 5, 4, 4)
    assert (mean - dist.mean).abs().max() < 1e-4
    assert (logvar - dist.logvar).abs().max() < 1e-4
    z_raw = torch.randn(1, 16, 5, 4, 4, generator=torch.Generator().manual_seed(7))
    ours = vae.decode(vae.normalize(z_raw), clamp=False)
    theirs = reference_decode_unclamped(ref, z_raw)
    assert ours.shape == (1, 3, 17, 32, 32)
    assert (ours - theirs).abs().max() < 1e-4


def test_batch_items_are_independent(tiny_vae):
    x = random_video(3, 5, 16, 24, seed=10)
    batch = tiny_vae.encode(x)
    for i in range(3):
        torch.testing.assert_close(batch[i : i + 1], tiny_vae.encode(x[i : i + 1]), atol=1e-5, rtol=0)
    z = torch.randn(2, 16, 3, 2, 3, generator=torch.Generator().manual_seed(11))
    out = tiny_vae.decode(z, clamp=False)
    for i in range(2):
        torch.testing.assert_close(out[i : i + 1], tiny_vae.decode(z[i : i + 1], clamp=False), atol=1e-5, rtol=0)


def test_image_equals_first_frame_of_a_clip(tiny_vae):
    x = random_video(2, 9, 16, 16, seed=12)
    image_latents = tiny_vae.encode(x[:, :, 0])  # [B, 3, H, W]
    assert image_latents.shape == (2, 16, 1, 2, 2)
    torch.testing.assert_close(image_latents, tiny_vae.encode(x)[:, :, :1], atol=1e-6, rtol=0)


def test_decode_shapes_and_clamp(tiny_vae):
    z = torch.randn(1, 16, 4, 3, 5, generator=torch.Generator().manual_seed(13)) * 3
    out = tiny_vae.decode(z)
    assert out.shape == (1, 3, 13, 24, 40)
    assert out.min() >= -1 and out.max() <= 1
    raw = tiny_vae.decode(z, clamp=False)
    torch.testing.assert_close(out, raw.clamp(-1, 1))


def test_sampling_is_reproducible_and_framewise(tiny_vae):
    x = random_video(1, 9, 16, 16, seed=14)
    a = tiny_vae.encode(x, sample=True, generator=torch.Generator().manual_seed(0))
    b = tiny_vae.encode(x, sample=True, generator=torch.Generator().manual_seed(0))
    mean = tiny_vae.encode(x)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert (a - mean).abs().max() > 0
    # Noise is drawn latent frame by latent frame: the first frame's sample is the same
    # whether the clip has one latent frame or three.
    first = tiny_vae.encode(x[:, :, :1], sample=True, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(first, a[:, :, :1], atol=1e-6, rtol=0)


def test_float64_and_dtype_follow_the_model():
    vae = random_vae(TINY, seed=15).double()
    x = random_video(1, 5, 16, 16, seed=16)
    z = vae.encode(x)  # float32 input is cast to the model's dtype
    assert z.dtype == torch.float64


def test_conditioning_clip_equals_encode_of_it(tiny_vae):
    g = torch.Generator().manual_seed(16)
    first = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    last = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    clip = torch.cat([first[:, :, None], torch.zeros(2, 3, 40, 32, 32)], dim=2)  # 41 frames
    ref = tiny_vae.encode(clip)
    got = tiny_vae.encode_conditioning(first, num_frames=41)
    assert got.shape == ref.shape == (2, 16, 11, 4, 4)
    # One frame through a conv takes another oneDNN kernel than four: float32 rounding
    # differs by a few 1e-7 per layer. In float64 the two agree to 1e-12 (next test).
    assert (got - ref).abs().max() < 5e-6
    clip[:, :, -1] = last
    got = tiny_vae.encode_conditioning(first, last, num_frames=41)
    assert (got - tiny_vae.encode(clip)).abs().max() < 5e-6
    with pytest.raises(ValueError, match="got 40 frames"):
        tiny_vae.encode_conditioning(first, num_frames=40)
    with pytest.raises(ValueError, match="last must be one frame shaped like first"):
        tiny_vae.encode_conditioning(first, last[:, :, :16], num_frames=41)


def test_conditioning_is_exact_in_float64(tiny_vae64):
    first = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(18), dtype=torch.float64) * 2 - 1
    clip = torch.cat([first[:, :, None], torch.zeros(1, 3, 40, 32, 32, dtype=torch.float64)], dim=2)
    torch.testing.assert_close(tiny_vae64.encode_conditioning(first, num_frames=41), tiny_vae64.encode(clip), atol=1e-12, rtol=0)


def test_constant_windows_are_computed_once_and_exactly(tiny_vae64):
    """The shortcut behind encode_conditioning, in float64: a repeated frame gives the same numbers."""
    from wanvae import CausalState

    first = torch.rand(1, 3, 1, 16, 16, generator=torch.Generator().manual_seed(17), dtype=torch.float64) * 2 - 1
    blank = torch.zeros(1, 3, 4, 16, 16, dtype=torch.float64)
    _, state = tiny_vae64.encode_step(first, CausalState())
    for _ in range(6):
        (a, _), after = tiny_vae64.encode_step(blank, state)
        (b, _), fast_after = tiny_vae64.encode_step(blank, state, skip_constant=True)
        torch.testing.assert_close(b, a, atol=1e-12, rtol=0)
        assert all(torch.allclose(fast_after.history[k], v, atol=1e-12, rtol=0) for k, v in after.history.items())
        state = after


@pytest.mark.parametrize("channels_last", [True, False])
def test_attention_runs_on_the_fused_kernel_never_the_full_matrix(channels_last):
    """Restricted to the flash kernel, SDPA raises instead of quietly materialising (HW)^2."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from wanvae.model.layers import AttentionBlock, to_layout

    block = AttentionBlock(32).eval()
    x = torch.randn(2, 32, 3, 12, 20)
    x = to_layout(x) if channels_last else x
    with torch.no_grad():
        ref = block(x)
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            fused = block(x)
    torch.testing.assert_close(fused, ref)


def test_conditioning_computes_each_constant_frame_once(tiny_vae, monkeypatch):
    """Most of an image-to-video clip's convs see a repeated frame: the work has to drop."""
    import wanvae.model.layers as layers

    macs = [0]
    conv3d = layers.conv3d

    def counting(x, weight, *args, **kwargs):
        y = conv3d(x, weight, *args, **kwargs)
        macs[0] += y.numel() * weight[0].numel()
        return y

    monkeypatch.setattr(layers, "conv3d", counting)
    first = random_video(1, 1, 32, 32, seed=19)[:, :, 0]
    tiny_vae.encode_conditioning(first, num_frames=81)
    conditioning, macs[0] = macs[0], 0
    tiny_vae.encode(torch.cat([first[:, :, None], torch.zeros(1, 3, 80, 32, 32)], dim=2))
    # Each layer computes up to where its input turns constant, then one frame: about a
    # quarter of the work at 81 frames (the deep, low-rate layers turn constant last).
    assert conditioning < 0.3 * macs[0], conditioning / macs[0]
