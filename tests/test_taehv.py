"""The TAEHV tiny autoencoders: the published files' layout, the reference's arithmetic, streams.

The reference here is written from the published description alone (a layer list applied
with `F.conv2d` on the raw state dict, parallel over time, NTCHW frames in [0, 1], as the
reference module takes them), independently of wanvae's modules. Random weights in the
published layout (`taehv_keys.json`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import wanvae
from conftest import random_video

KEYS = Path(__file__).parent / "data" / "taehv_keys.json"

ENCODER = ["conv", "relu", "pool", "conv2", "mb", "mb", "mb", "pool", "conv2", "mb", "mb", "mb", "pool", "conv2", "mb", "mb", "mb", "conv"]
DECODER = ["clamp", "conv", "relu", "mb", "mb", "mb", "up", "grow", "conv", "mb", "mb", "mb", "up", "grow", "conv",
           "mb", "mb", "mb", "up", "grow", "conv", "relu", "conv"]
# taew2_2_super: a 1x1 conv in (no clamp), then per stage three ConvNeXt-style blocks, a 3x3 conv
# to 4x the next width, ReLU, a pixel shuffle by 2, a TGrow; a 3x3 conv out.
SUPER_DECODER = ["conv1x1", *(["smb", "smb", "smb", "conv", "relu", "shuffle", "grow"] * 3), "conv"]


def published_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in json.loads(KEYS.read_text())[name]:
        t = torch.randn(shape, generator=g)
        state[key] = t / math.sqrt(t[0].numel()) if len(shape) > 1 else 0.05 * t
    return state


def reference(sd: dict, prefix: str, kinds: list[str], x: torch.Tensor, n: int) -> torch.Tensor:
    """The layer list over x [N*T, C, H, W] (time-major per sample), parallel over time."""
    for i, kind in enumerate(kinds):
        w = lambda name, i=i: sd.get(f"{prefix}.{i}.{name}")  # noqa: E731
        if kind in ("conv", "conv2"):
            x = F.conv2d(x, w("weight"), w("bias"), stride=2 if kind == "conv2" else 1, padding=1)
        elif kind == "relu":
            x = F.relu(x)
        elif kind == "clamp":
            x = torch.tanh(x / 3) * 3
        elif kind == "up":
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        elif kind == "conv1x1":
            x = F.conv2d(x, w("weight"))
        elif kind == "shuffle":
            x = F.pixel_shuffle(x, 2)
        elif kind == "pool":
            weight = w("conv.weight")
            s = weight.shape[1] // weight.shape[0]
            x = F.conv2d(x.reshape(-1, s * x.shape[1], *x.shape[2:]), weight)
        elif kind == "grow":
            c = x.shape[1]
            x = F.conv2d(x, w("conv.weight")).reshape(-1, c, *x.shape[2:])
        elif kind == "smb":  # x + 1x1(ReLU(1x1(depthwise 7x7([x, past])))), no activation after
            t = x.shape[0] // n
            seq = x.view(n, t, *x.shape[1:])
            past = torch.cat([torch.zeros_like(seq[:, :1]), seq[:, :-1]], dim=1).reshape(x.shape)
            both = torch.cat([x, past], 1)
            h = F.conv2d(both, w("conv.0.weight"), padding=3, groups=both.shape[1])
            h = F.relu(F.conv2d(h, w("conv.1.weight"), w("conv.1.bias")))
            x = x + F.conv2d(h, w("conv.3.weight"))
        else:  # a memory block: its input one frame earlier, zeros before the first
            t = x.shape[0] // n
            seq = x.view(n, t, *x.shape[1:])
            past = torch.cat([torch.zeros_like(seq[:, :1]), seq[:, :-1]], dim=1).reshape(x.shape)
            h = F.relu(F.conv2d(torch.cat([x, past], 1), w("conv.0.weight"), w("conv.0.bias"), padding=1))
            h = F.relu(F.conv2d(h, w("conv.2.weight"), w("conv.2.bias"), padding=1))
            h = F.conv2d(h, w("conv.4.weight"), w("conv.4.bias"), padding=1)
            x = F.relu(h + x)
    return x


def reference_encode(sd: dict, frames01: torch.Tensor, patch: int) -> torch.Tensor:
    """NTCHW frames in [0, 1] -> NTCHW latents; the end padded with the last frame to 4k frames."""
    n, t = frames01.shape[:2]
    x = frames01.reshape(n * t, *frames01.shape[2:])
    if patch > 1:
        x = F.pixel_unshuffle(x, patch)
    x = x.view(n, t, *x.shape[1:])
    if t % 4:
        x = torch.cat([x, x[:, -1:].expand(-1, 4 - t % 4, -1, -1, -1)], dim=1)
    t = x.shape[1]
    y = reference(sd, "encoder", ENCODER, x.reshape(n * t, *x.shape[2:]), n)
    return y.view(n, -1, *y.shape[1:])


def reference_decode(sd: dict, latents: torch.Tensor, patch: int) -> torch.Tensor:
    """NTCHW latents -> NTCHW frames in [0, 1]: 4 frames a latent, the first 3 dropped."""
    n, t = latents.shape[:2]
    kinds = SUPER_DECODER if "decoder.1.conv.0.weight" in sd else DECODER
    y = reference(sd, "decoder", kinds, latents.reshape(n * t, *latents.shape[2:]), n)
    if patch > 1:
        y = F.pixel_shuffle(y, patch)
    y = y.clamp(0, 1).view(n, -1, *y.shape[1:])
    return y[:, 3:]


def ntchw(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2)


@pytest.fixture(scope="module", params=[("taew2_1.pth", 1), ("taew2_2.pth", 2), ("taew2_2_super.pth", 2)], ids=["taew2_1", "taew2_2", "taew2_2_super"])
def tiny(request, tmp_path_factory):
    name, patch = request.param
    sd = published_state(name)
    path = tmp_path_factory.mktemp("taehv") / name
    torch.save(sd, path)
    return wanvae.load(path), sd, patch, path


def test_the_published_layout_loads_strictly_and_is_recognised(tiny):
    vae, sd, patch, path = tiny
    assert type(vae).__name__ == "TinyVAE"
    assert set(vae.state_dict()) == set(sd) and all(vae.state_dict()[k].shape == v.shape for k, v in sd.items())
    assert (vae.config.patch_size, vae.config.z_dim) == (patch, 16 if patch == 1 else 48)
    info = wanvae.io.weights.describe(path)
    assert info["fits"] and info["family"].startswith("TAEHV tiny autoencoder") and "normalised latents" in info["model"]


@torch.no_grad()
def test_encode_and_decode_are_the_reference_s_arithmetic(tiny):
    vae, sd, patch, _ = tiny
    s = vae.config.spatial_ratio
    x = random_video(2, 9, 2 * s, 3 * s, seed=101)  # 9 frames: the end padded to 12
    z = vae.encode(x)
    assert z.shape == (2, vae.config.z_dim, 3, 2, 3)
    ref_z = reference_encode(sd, ntchw((x + 1) / 2), patch)
    torch.testing.assert_close(z, ntchw(ref_z), atol=1e-4, rtol=0)
    frames = vae.decode(z)
    assert frames.shape == x.shape  # 1 + 4(t - 1) frames, as Wan
    torch.testing.assert_close(frames, ntchw(reference_decode(sd, ntchw(z), patch)) * 2 - 1, atol=1e-4, rtol=0)


@torch.no_grad()
def test_any_split_of_pushes_equals_one_pass_and_one_latent_gives_its_frames_at_once(tiny):
    vae, _, _, _ = tiny
    s = vae.config.spatial_ratio
    x = random_video(1, 13, 2 * s, 2 * s, seed=102)
    z = vae.encode(x)
    for sizes in ([13], [1, 4, 8], [3, 3, 3, 3, 1], [5, 8]):
        stream = wanvae.StreamEncoder(vae)
        outs, start = [], 0
        for n in sizes:
            outs.append(stream.push(x[:, :, start : start + n]))
            start += n
        outs.append(stream.flush())
        assert torch.equal(torch.cat(outs, dim=2), z), sizes
    whole = vae.decode(z)
    stream = wanvae.StreamDecoder(vae)
    assert torch.equal(torch.cat([stream.push(z[:, :, i : i + 1]) for i in range(z.shape[2])] + [stream.flush()], dim=2), whole)
    live = wanvae.StreamDecoder(vae, chunk=1)  # a world model pushing one latent at a time
    got = [live.push(z[:, :, i : i + 1]).shape[2] for i in range(z.shape[2])]
    assert got == [1, 4, 4, 4] and live.flush().shape[2] == 0  # each latent's frames as soon as it is pushed
    torch.testing.assert_close(torch.cat([wanvae.StreamDecoder(vae, chunk=1).push(z)], dim=2), whole, atol=2e-6, rtol=0)


def test_stream_state_is_flat_in_the_stream_s_length(tiny):
    vae, _, _, _ = tiny
    s = vae.config.spatial_ratio
    stream = wanvae.StreamDecoder(vae, chunk=1)
    sizes = []
    with torch.no_grad():
        for i in range(6):
            stream.push(torch.randn(1, vae.config.z_dim, 1, 2, 2, generator=torch.Generator().manual_seed(i)))
            sizes.append(stream.state_nbytes)
    assert sizes[1] == sizes[-1] > 0
    assert vae.stream_state_nbytes("decoder", 2 * vae.config.decoded_spatial_ratio, 2 * vae.config.decoded_spatial_ratio) == sizes[-1]
    del s


def test_lighttae_files_take_raw_latents_converted_at_the_boundary(tmp_path):
    sd = published_state("taew2_1.pth", seed=3)
    torch.save(sd, tmp_path / "lighttaew2_1.pth")
    vae = wanvae.load(tmp_path / "lighttaew2_1.pth")
    assert vae.config.raw_latents
    x = random_video(1, 5, 16, 16, seed=103)
    mean = ntchw(reference_encode(sd, ntchw((x + 1) / 2), 1))  # what the file's encoder makes: the raw mean
    wan = wanvae.WanVAE(wanvae.preset("tiny"))
    with torch.no_grad():
        torch.testing.assert_close(vae.encode(x), wan.normalize(mean), atol=1e-4, rtol=1e-5)
        latents = wan.normalize(mean)
        torch.testing.assert_close(vae.decode(latents), ntchw(reference_decode(sd, ntchw(mean), 1)) * 2 - 1, atol=1e-4, rtol=0)
    assert "raw latents" in wanvae.io.weights.describe(tmp_path / "lighttaew2_1.pth")["model"]


def test_oversized_tgrow_weights_keep_their_last_channels_and_previews_use_that(tmp_path):
    sd = published_state("taew2_1.pth", seed=4)
    wide = dict(sd)
    wide["decoder.7.conv.weight"] = torch.cat([torch.randn(256, 256, 1, 1), sd["decoder.7.conv.weight"]])  # built with a time upscale there
    torch.save(wide, tmp_path / "taew2_1.pth")
    vae = wanvae.load(tmp_path / "taew2_1.pth")
    assert torch.equal(vae.state_dict()["decoder.7.conv.weight"], sd["decoder.7.conv.weight"])
    z = torch.randn(1, 16, 3, 2, 2, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        full = vae.decode(z)
        no_time = vae.preview(time=False).decode(z)
        small = vae.preview(space=False).decode(z)
    assert full.shape == (1, 3, 9, 16, 16)
    assert no_time.shape == (1, 3, 3, 16, 16)  # one frame per latent
    assert small.shape == (1, 3, 9, 8, 8)  # the last space up-sampling skipped


def test_the_super_decoder_previews_without_time_but_refuses_half_size(tmp_path):
    torch.save(published_state("taew2_2_super.pth", seed=6), tmp_path / "taew2_2_super.pth")
    vae = wanvae.load(tmp_path / "taew2_2_super.pth")
    assert vae.config.decoder_variant == "super"
    z = torch.randn(1, 48, 3, 2, 2, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert vae.preview(time=False).decode(z).shape == (1, 3, 3, 32, 32)  # one frame per latent
    with pytest.raises(ValueError, match="learned pixel shuffle"):
        vae.preview(space=False)


def test_a_wan_pipeline_decodes_its_drafts_with_the_tiny_model(tiny):
    """`for_diffusers(tiny)` under diffusers' real WanPipeline: its frames are the tiny model's
    decode of the pipeline's (normalised) latents; the pipeline hands its VAE raw ones."""
    from wanvae.testing import tiny_wan_pipeline

    vae, _, patch, _ = tiny
    if patch != 1:
        pytest.skip("the tiny pipeline's transformer here is built for Wan 2.1's 16 latent channels")
    pipe = tiny_wan_pipeline("t2v", wanvae.for_diffusers(vae))

    def call(output_type):
        return pipe(prompt_embeds=torch.randn(1, 4, 32, generator=torch.Generator().manual_seed(0)), guidance_scale=1.0,
                    num_frames=5, height=32, width=32, num_inference_steps=1, generator=torch.Generator().manual_seed(1),
                    output_type=output_type).frames

    latents, frames = call("latent"), call("pt")  # frames [B, T, 3, H, W] in [0, 1]
    with torch.no_grad():
        want = (vae.decode(latents) + 1) / 2
    assert frames.shape == (1, 5, 3, 32, 32)
    torch.testing.assert_close(frames, ntchw(want), atol=1e-5, rtol=0)
    # diffusers' tiling switch changes nothing: a TAEHV model runs whole frames.
    pipe.vae.enable_tiling(tile_sample_min_height=128, tile_sample_min_width=128)
    torch.testing.assert_close(call("pt"), frames, atol=0, rtol=0)
