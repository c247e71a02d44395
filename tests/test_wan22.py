"""The Wan 2.2 VAE (48 channels, 4x16x16): the reference's numbers, and everything 2.1 can do.

diffusers' AutoencoderKLWan built with the 2.2 configuration is the reference, with the same
random weights mapped across. The family is configuration over the blocks Wan 2.1 uses, so
the state, stream and tiling code under test is the same code the 2.1 tests run.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import wanvae
from wanvae import CausalState, StreamDecoder, StreamEncoder, WanVAE, preset
from wanvae.coding import tiling
from wanvae.model.layers import AvgDown3d, DupUp3d, unpatchify
from wanvae.io.weights import CheckpointError, diffusers_to_original, original_to_diffusers
from conftest import random_video
from wanvae.testing import randomize, reference_decode_unclamped, reference_for

TINY22 = preset("tiny-2.2")
# Narrower still, for the float64 checks on frames big enough for 3 x 3 tiles of 256 px.
NANO22 = dataclasses.replace(TINY22, dim=4, decoder_dim=4, name="nano-2.2")
KEYS22 = Path(__file__).parent / "data" / "wan22_vae_keys.json"  # a copy of ../shared/reference/wan22_vae_keys.json

# The published statistics, typed in from Wan2.2's vae2_2.py (not read from our preset).
PUBLISHED_MEAN = [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
    0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
    -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
]  # fmt: skip
PUBLISHED_STD = [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
]  # fmt: skip


@pytest.fixture(scope="module")
def vae22() -> WanVAE:
    return randomize(WanVAE(TINY22), seed=220)


@pytest.fixture(scope="module")
def ref22(vae22):
    return reference_for(vae22)


@pytest.fixture(scope="module")
def vae22_64() -> WanVAE:
    return randomize(WanVAE(NANO22), seed=221).double()


# ---- the configuration and the checkpoint layout ------------------------------------------
def test_preset_is_the_released_model_and_its_keys_are_the_checkpoint_keys():
    cfg = preset("wan2.2")
    assert (cfg.z_dim, cfg.spatial_ratio, cfg.temporal_ratio, cfg.family) == (48, 16, 4, "Wan 2.2")
    reference = json.loads(KEYS22.read_text())["tensors"]
    with torch.device("meta"):
        state = WanVAE(cfg).state_dict()
    # Same names, same shapes, same order as Wan2.2_VAE.pth: it loads strictly, no key map.
    assert [(k, list(v.shape)) for k, v in state.items()] == [(k, v) for k, v in reference.items()]
    assert sum(v.numel() for v in state.values()) == 704_688_668


def test_latent_statistics_are_the_published_ones(vae22):
    for cfg in (preset("wan2.2"), TINY22):
        assert list(cfg.latents_mean) == PUBLISHED_MEAN and list(cfg.latents_std) == PUBLISHED_STD
    mean, _ = vae22.encode_moments(random_video(1, 1, 32, 48, seed=1))
    expected = (mean - torch.tensor(PUBLISHED_MEAN).view(1, 48, 1, 1, 1)) / torch.tensor(PUBLISHED_STD).view(1, 48, 1, 1, 1)
    torch.testing.assert_close(vae22.encode(random_video(1, 1, 32, 48, seed=1)), expected, atol=1e-6, rtol=0)


def test_a_pth_without_metadata_is_recognised_by_its_shapes(vae22, tmp_path):
    torch.save({k: v.clone() for k, v in vae22.state_dict().items()}, tmp_path / "Wan2.2_VAE.pth")
    loaded = wanvae.load(tmp_path / "Wan2.2_VAE.pth")
    assert loaded.config == TINY22 and loaded.config.family == "Wan 2.2"
    assert list(loaded.config.latents_mean) == PUBLISHED_MEAN  # a .pth has no metadata: the family's numbers
    x = random_video(1, 5, 32, 48, seed=2)
    assert torch.equal(loaded.encode(x), vae22.encode(x))


def test_a_checkpoint_of_neither_family_says_what_fits_neither(vae22, tmp_path):
    state = {k: v.clone() for k, v in vae22.state_dict().items()}
    state["decoder.head.2.weight"] = torch.zeros(5, 12, 3, 3, 3)
    del state["encoder.downsamples.3.downsamples.1.residual.6.bias"]
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError) as e:
        wanvae.load(tmp_path / "odd.pth")
    message = str(e.value)
    assert "\n" not in message and "fits no known Wan VAE" in message
    assert "as Wan 2.1: missing:" in message and "as Wan 2.2: missing: encoder.downsamples.3.downsamples.1.residual.6.bias" in message


def test_diffusers_key_maps_are_inverse_and_match_a_real_diffusers_model(vae22, ref22):
    ours = list(vae22.state_dict())
    theirs = [original_to_diffusers(k, TINY22) for k in ours]
    assert sorted(theirs) == sorted(ref22.state_dict())
    assert [diffusers_to_original(k, TINY22) for k in theirs] == ours
    assert original_to_diffusers("encoder.downsamples.1.downsamples.2.time_conv.weight", TINY22) == "encoder.down_blocks.1.downsampler.time_conv.weight"
    assert original_to_diffusers("decoder.upsamples.0.upsamples.3.resample.1.bias", TINY22) == "decoder.up_blocks.0.upsampler.resample.1.bias"
    assert original_to_diffusers("decoder.upsamples.2.upsamples.0.shortcut.weight", TINY22) == "decoder.up_blocks.2.resnets.0.conv_shortcut.weight"


@pytest.mark.parametrize("fmt", ["original-safetensors", "original-pth", "diffusers"])
def test_every_format_round_trips_and_halves_load_only_their_half(vae22, fmt, tmp_path):
    path = {"original-safetensors": tmp_path / "v.safetensors", "original-pth": tmp_path / "v.pth", "diffusers": tmp_path / "v"}[fmt]
    wanvae.save(vae22, path, format="diffusers" if fmt == "diffusers" else "original")
    full = wanvae.load(path)
    assert full.config == TINY22
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), vae22.state_dict().values()))
    enc, dec = wanvae.load(path, parts="encoder"), wanvae.load(path, parts="decoder")
    assert not any(k.startswith("decoder.") for k in enc.state_dict()) and not any(k.startswith("encoder.") for k in dec.state_dict())
    x = random_video(1, 5, 32, 48, seed=3)
    z = enc.encode(x)
    assert torch.equal(z, vae22.encode(x)) and torch.equal(dec.decode(z), vae22.decode(z))


def test_a_saved_diffusers_folder_is_a_real_diffusers_model(vae22, tmp_path):
    from diffusers import AutoencoderKLWan

    wanvae.save(vae22, tmp_path / "d", format="diffusers")
    theirs = AutoencoderKLWan.from_pretrained(tmp_path / "d").eval()
    assert theirs.config.is_residual and theirs.config.patch_size == 2 and theirs.config.z_dim == 48
    assert list(theirs.config.latents_mean) == PUBLISHED_MEAN
    x = random_video(1, 5, 32, 48, seed=4)
    with torch.no_grad():
        mean = theirs.encode(x).latent_dist.mean
    assert (mean - vae22.encode_moments(x)[0]).abs().max() < 1e-5


# ---- the reference's numbers ----------------------------------------------------------------
@pytest.mark.parametrize("frames", [1, 5, 9])
def test_encode_and_decode_match_diffusers(vae22, ref22, frames):
    x = random_video(1, frames, 48, 80, seed=10 + frames)  # 80x48: not square, 5x3 latents
    with torch.no_grad():
        dist = ref22.encode(x).latent_dist
    mean, logvar = vae22.encode_moments(x)
    assert mean.shape == (1, 48, 1 + (frames - 1) // 4, 3, 5)
    assert (mean - dist.mean).abs().max() < 1e-5 and (logvar - dist.logvar).abs().max() < 1e-5
    z = torch.randn(mean.shape, generator=torch.Generator().manual_seed(frames))
    ours = vae22.decode(vae22.normalize(z), clamp=False)  # before the clamp: saturation hides nothing
    theirs = unpatchify(reference_decode_unclamped(ref22, z), 2)
    assert ours.shape == (1, 3, frames, 48, 80)
    assert (ours - theirs).abs().max() < 1e-5
    with torch.no_grad():
        clamped = ref22.decode(z).sample
    assert (vae22.decode(vae22.normalize(z)) - clamped).abs().max() < 1e-5


def test_a_sampling_stream_draws_what_one_pass_draws(vae22):
    x = random_video(1, 9, 32, 48, seed=20)
    a = vae22.encode(x, sample=True, generator=torch.Generator().manual_seed(7))
    stream = StreamEncoder(vae22, sample=True, generator=torch.Generator().manual_seed(7))
    b = torch.cat([stream.push(c) for c in x.split([3, 6], dim=2)] + [stream.flush()], dim=2)
    assert torch.equal(a, b) and not torch.equal(a, vae22.encode(x))


def test_the_shortcuts_are_the_references(vae22):
    # At the first chunk the time-folding average sees one zero frame, then the real one:
    # even channels (time offset 0) are exactly 0, odd ones the 2x2 mean (facts.md).
    down = vae22.encoder.downsamples[1].avg_shortcut
    assert isinstance(down, AvgDown3d) and (down.factor_t, down.factor_s, down.group) == (2, 2, 4)
    from wanvae.coding.state import StepContext

    x = torch.randn(1, 8, 1, 4, 6, dtype=torch.float64)
    y = down(x, StepContext(CausalState()))
    assert torch.equal(y[:, 0::2], torch.zeros_like(y[:, 0::2]))
    torch.testing.assert_close(y[:, 1::2], torch.nn.functional.avg_pool2d(x[:, :, 0], 2).unsqueeze(2), atol=1e-15, rtol=0)
    up = vae22.decoder.upsamples[2].avg_shortcut  # 48 -> 24 channels: not a nearest up-sample
    assert isinstance(up, DupUp3d) and up.repeats == 2
    z = torch.randn(1, 48, 2, 3, 3, dtype=torch.float64)
    out = up(z, StepContext(CausalState(frames_seen=1)))
    assert torch.equal(out[:, 5, :, 0::2, :], z[:, 10].repeat_interleave(2, dim=-1))  # rows 0: input channel 2c
    assert torch.equal(out[:, 5, :, 1::2, :], z[:, 11].repeat_interleave(2, dim=-1))  # rows 1: input channel 2c + 1
    assert vae22.decoder.upsamples[3].avg_shortcut is None  # the last level has no shortcut


def test_the_image_alone_is_the_first_frame_of_a_clip(vae22):
    # TI2V's image-to-video: the image alone, with zero history (the 2D first-frame conv).
    x = random_video(1, 5, 32, 48, seed=21)
    assert torch.equal(vae22.encode(x[:, :, 0]), vae22.encode(x)[:, :, :1])


def test_encode_conditioning_equals_encode_of_that_clip(vae22):
    first, last = random_video(1, 1, 32, 48, seed=22), random_video(1, 1, 32, 48, seed=23)
    clip = torch.cat([first, torch.zeros(1, 3, 15, 32, 48), last], dim=2)
    assert (vae22.encode_conditioning(first, last, num_frames=17) - vae22.encode(clip)).abs().max() < 1e-5
    clip[:, :, -1] = 0
    assert (vae22.encode_conditioning(first, num_frames=17) - vae22.encode(clip)).abs().max() < 1e-5


# ---- state, streams and tiles: the same code as Wan 2.1, exact in float64 --------------------
def test_one_pass_equals_any_stream_split_in_float64(vae22_64):
    x = random_video(1, 13, 32, 48, seed=30).double()
    one = vae22_64.encode(x)
    for split in ([1, 12], [5, 4, 4], [2, 3, 1, 7], [13]):
        stream = StreamEncoder(vae22_64, chunk=4)
        parts = [stream.push(c) for c in x.split(split, dim=2)] + [stream.flush()]
        torch.testing.assert_close(torch.cat(parts, dim=2), one, atol=1e-12, rtol=0)
    z = torch.randn(1, 48, 4, 2, 3, generator=torch.Generator().manual_seed(31), dtype=torch.float64)
    one = vae22_64.decode(z, clamp=False)
    for split in ([1, 3], [2, 2], [4]):
        stream = StreamDecoder(vae22_64, clamp=False)
        parts = [stream.push(c) for c in z.split(split, dim=2)] + [stream.flush()]
        torch.testing.assert_close(torch.cat(parts, dim=2), one, atol=1e-12, rtol=0)


def test_steps_with_explicit_state_equal_one_pass(vae22_64):
    x = random_video(1, 9, 32, 48, seed=32).double()
    (m0, _), state = vae22_64.encode_step(x[:, :, :1], CausalState())
    (m1, _), state = vae22_64.encode_step(x[:, :, 1:5], state)
    (m2, _), _ = vae22_64.encode_step(x[:, :, 5:], state)
    torch.testing.assert_close(vae22_64.normalize(torch.cat([m0, m1, m2], dim=2)), vae22_64.encode(x), atol=1e-12, rtol=0)


def test_tiled_equals_untiled_on_3x3_tiles_in_float64(vae22_64):
    # 3 x 3 tiles of 256 px (16 latents, the least a tile may have), sizes no multiple of it.
    height, width, tile = 784, 800, 256
    assert tiling.plan(height, width, (tile, tile), 16) == tiling.TileGrid((17, 16, 16), (17, 17, 16))
    x = random_video(1, 5, height, width, seed=33).double()
    ref = vae22_64.encode(x)
    torch.testing.assert_close(vae22_64.encode(x, tile=tile), ref, atol=1e-12, rtol=0)
    z = torch.randn(1, 48, 2, height // 16, width // 16, generator=torch.Generator().manual_seed(34), dtype=torch.float64)
    grid = vae22_64.plan("decoder", tuple(z.shape), tile).grid
    assert (len(grid.rows), len(grid.cols)) == (3, 3)
    ref = vae22_64.decode(z, clamp=False)
    torch.testing.assert_close(vae22_64.decode(z, clamp=False, tile=tile), ref, atol=1e-12, rtol=0)
    stream = StreamDecoder(vae22_64, tile=tile, clamp=False)  # time-major tiles, each with its own state
    parts = [stream.push(c) for c in z.split(1, dim=2)] + [stream.flush()]
    torch.testing.assert_close(torch.cat(parts, dim=2), ref, atol=1e-12, rtol=0)


def test_tiled_float32_within_1e_5(vae22):
    x = random_video(1, 5, 512, 528, seed=35)
    assert (vae22.encode(x, tile=256) - vae22.encode(x)).abs().max() < 1e-5


# ---- bad input names the 2.2 rules ----------------------------------------------------------
def test_sizes_must_be_multiples_of_16_and_the_message_gives_the_nearest(vae22):
    with pytest.raises(ValueError, match=r"frame size 100x40 \(W x H\) is not a multiple of 16: the Wan 2.2 VAE's spatial factor; crop or resize to 96x32, or pad to 112x48") as e:
        vae22.encode(torch.zeros(1, 3, 1, 40, 100))
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="not a multiple of 16"):
        vae22.encode(torch.zeros(1, 3, 1, 40, 48))


def test_latents_of_the_other_family_are_refused_naming_both(vae22):
    with pytest.raises(ValueError, match=r"these are Wan 2.1 latents \(16 channels.*\) but this is a Wan 2.2 VAE \(48 channels\)"):
        vae22.decode(torch.zeros(1, 16, 2, 2, 3))
    wan21 = randomize(WanVAE(preset("tiny")), seed=3)
    with pytest.raises(ValueError, match=r"these are Wan 2.2 latents \(48 channels.*\) but this is a Wan 2.1 VAE \(16 channels\)"):
        wan21.decode(torch.zeros(1, 48, 2, 2, 3))


# ---- both families: every stateful layer against the state and the seams it keeps ---------
@pytest.mark.parametrize("name", ["tiny", "tiny-2.2"])
def test_every_stateful_layer_keeps_its_history_and_hands_on_its_seams(name, monkeypatch):
    from wanvae.model.layers import CausalConv3d, DownLevel, Resample, ResidualBlock, UpLevel
    from wanvae.coding.seams import Seams

    vae = randomize(WanVAE(preset(name)), seed=5)
    s = vae.config.spatial_ratio
    # Time: after a first frame and a regular chunk, the state holds exactly the layers that
    # look back, each at most its look-back.
    (_, _), state = vae.encode_step(random_video(1, 1, 2 * s, 2 * s, seed=6), CausalState())
    (_, _), state = vae.encode_step(random_video(1, 4, 2 * s, 2 * s, seed=7), state)
    assert set(state.history) == set(vae.stateful_layers("encoder"))
    _, dstate = vae.decode_step(torch.randn(1, vae.config.z_dim, 2, 2, 2), CausalState())
    assert set(dstate.history) == set(vae.stateful_layers("decoder"))
    for key, frames in {**state.history, **dstate.history}.items():
        downsampler = key.startswith("encoder.") and key.endswith("time_conv")  # keeps its last frame
        assert frames.shape[2] <= (1 if downsampler else 2), key
    # Space: on a 2 x 2 tile grid every spatial layer of the tiled paths hands on a seam,
    # under its own module path, and nothing else does.
    handed: set[str] = set()
    extend, align = Seams.extend, Seams.align
    monkeypatch.setattr(Seams, "extend", lambda self, x, tile, key, *a, **k: handed.add(key) or extend(self, x, tile, key, *a, **k))
    monkeypatch.setattr(Seams, "align", lambda self, x, tile, key, like: handed.add(key) or align(self, x, tile, key, like))
    expected: set[str] = set()
    for path in (vae.encoder.downsamples, vae.decoder.upsamples):
        for module in path.modules():
            if isinstance(module, CausalConv3d) and module.padding[1]:
                expected.add(module.state_key)
            elif isinstance(module, ResidualBlock):
                expected.add(module.state_key + ".shortcut")
            elif isinstance(module, Resample):
                expected.add(module.state_key + ".resample")
            elif isinstance(module, (DownLevel, UpLevel)) and module.avg_shortcut is not None:
                expected.add(module.avg_shortcut.state_key + ".align")
                if isinstance(module.avg_shortcut, AvgDown3d) and module.avg_shortcut.factor_s > 1:
                    expected.add(module.avg_shortcut.state_key)
    expected |= {vae.encoder.conv1.state_key, vae.decoder.head[2].state_key}
    side = 2 * tiling.MIN_TILE_LATENTS * s
    vae.encode(random_video(1, 1, side, side, seed=8), tile=side // 2)
    vae.decode(torch.randn(1, vae.config.z_dim, 1, side // s, side // s), tile=side // 2)
    assert handed == expected


@pytest.mark.parametrize("at_start", [True, False])
def test_the_duplicate_up_added_in_place_is_the_shortcut_added(vae22, at_start):
    from wanvae.coding.state import StepContext

    for level in vae22.decoder.upsamples[:3]:
        up = level.avg_shortcut
        x = torch.randn(1, up.in_dim, 3, 4, 5).contiguous(memory_format=torch.channels_last_3d)
        ctx = StepContext(CausalState(frames_seen=0 if at_start else 1))
        y = torch.randn_like(up(x, ctx)).contiguous(memory_format=torch.channels_last_3d)
        assert torch.equal(up.add_to(y.clone(), x, ctx), y + up(x, ctx))


def test_a_saved_folder_has_the_permissions_of_a_plain_mkdir(vae22, tmp_path):
    import os
    import stat

    umask = os.umask(0o022)
    try:
        wanvae.save(vae22, tmp_path / "d", format="diffusers")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
    assert {stat.S_IMODE(f.stat().st_mode) for f in (tmp_path / "d").iterdir()} == {0o644}


def test_wide_convs_run_from_the_blocked_layout_and_give_the_same_numbers():
    from wanvae.model.routes import blocked_is_faster, conv3d

    g = torch.Generator().manual_seed(9)
    x = torch.randn(1, 1024, 4, 6, 7, generator=g).contiguous(memory_format=torch.channels_last_3d)
    w = torch.randn(16, 1024, 3, 3, 3, generator=g) / 96
    assert blocked_is_faster(x) and not blocked_is_faster(x[:, :384])
    y = conv3d(x, w, None, padding=(0, 1, 1))
    assert y.is_contiguous(memory_format=torch.channels_last_3d)  # the layout the next layer expects
    torch.testing.assert_close(y, torch.nn.functional.conv3d(x.contiguous(), w, padding=(0, 1, 1)), atol=1e-5, rtol=0)
