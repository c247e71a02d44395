"""The VAEs built on Wan 2.1's blocks beside Wan's own (issue 34): Qwen-Image's (RGB and the
RGBA Layered one), the 2x upscaling decoder, pruned (LightVAE-style) widths.

Each equals diffusers' own class with the same random weights, untiled and tiled where the
tile really splits the frame; each is named for what it is; the RGBA one reads and writes
alpha on the command line; the upscaling one gives frames twice the size, whole, tiled and
streamed alike; diffusers' Qwen-Image pipelines give the same images with ours.
"""

from __future__ import annotations

import dataclasses
import subprocess

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import wanvae
from wanvae import VAEConfig, WanVAE
from wanvae.config import WAN22
from wanvae.io.weights import CheckpointError, CheckpointNote, describe, infer_config, save
from wanvae.testing import randomize, reference_for

diffusers = pytest.importorskip("diffusers")
from diffusers import AutoencoderKLQwenImage, AutoencoderKLWan  # noqa: E402

TOL = 1e-4


def clip(channels: int, t: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, channels, t, h, w, generator=g) * 2 - 1


def shuffled(frames: torch.Tensor, r: int) -> torch.Tensor:
    """diffusers' unshuffled head output, pixel-shuffled frame by frame as ComfyUI does."""
    return torch.stack([F.pixel_shuffle(frames[:, :, i], r) for i in range(frames.shape[2])], dim=2)


def assert_matches_reference(vae: WanVAE, ref, channels: int, tile: int, upscale: int = 1) -> None:
    """Encode means and decoded frames against diffusers', untiled and tiled (the tile splits)."""
    x = clip(channels, 5, 128, 256, seed=3)  # two 128-px tiles across
    theirs = ref.encode(x).latent_dist.mean
    for t in (None, tile):
        mean, _ = vae.encode_moments(x, tile=t)
        assert (mean - theirs).abs().max() < TOL
    assert len(vae.plan("encoder", tuple(x.shape), tile).grid) == 2
    z = torch.randn(1, 16, 2, 16, 32, generator=torch.Generator().manual_seed(4))
    expected = shuffled(ref.decode(z).sample, upscale) if upscale > 1 else ref.decode(z).sample
    out_tile = tile * upscale  # decode tiles are in output pixels
    assert len(vae.plan("decoder", tuple(z.shape), out_tile).grid) == 2
    for t in (None, out_tile):
        ours = vae.decode(z, raw=True, tile=t)
        assert ours.shape == expected.shape == (1, channels, 5, 128 * upscale, 256 * upscale)
        assert (ours - expected).abs().max() < TOL


@pytest.mark.parametrize("channels", [3, 4])
def test_qwen_image_vae_equals_diffusers_class(channels):
    ref = randomize(AutoencoderKLQwenImage(base_dim=8, input_channels=channels), seed=11)
    vae = wanvae.load(ref)  # the object a Qwen-Image pipeline holds
    assert vae.config.image_channels == channels
    assert vae.config.name == ("qwen-image" if channels == 3 else "qwen-image-layered")
    assert_matches_reference(vae, ref, channels, tile=128)


def test_upscaling_decoder_equals_diffusers_then_pixel_shuffle():
    vae = randomize(WanVAE(wanvae.preset("tiny-upscale2x")), seed=12)
    ref = reference_for(vae)
    assert isinstance(ref, AutoencoderKLWan) and ref.config.out_channels == 12
    assert_matches_reference(vae, ref, 3, tile=128, upscale=2)


def test_upscaling_decoder_streams_equal_the_whole_clip():
    vae = randomize(WanVAE(wanvae.preset("tiny-upscale2x")), seed=13)
    z = torch.randn(1, 16, 4, 16, 32, generator=torch.Generator().manual_seed(5))
    whole = vae.decode(z)
    for tile in (None, 256):
        assert torch.equal(vae.decode(z, tile=tile), whole)  # exact tiles: the same arithmetic
        stream = wanvae.StreamDecoder(vae, tile=tile)
        pieces = [stream.push(z[:, :, :1]), stream.push(z[:, :, 1:3]), stream.push(z[:, :, 3:]), stream.flush()]
        # oneDNN may pick another kernel for a pushed piece than for the whole: float32 rounding.
        torch.testing.assert_close(torch.cat(pieces, dim=2), whole, atol=2e-5, rtol=0)
    assert whole.shape == (1, 3, 13, 256, 512)


def test_pixel_shuffle_order_is_torchs_not_the_unpatchify():
    """Sub-pixel order decides which pixel each head channel lands on: rows first, as F.pixel_shuffle."""
    from wanvae.model.layers import pixel_shuffle_frames, unpatchify

    x = torch.arange(12 * 2 * 2 * 3, dtype=torch.float32).reshape(1, 12, 2, 2, 3)
    assert torch.equal(pixel_shuffle_frames(x, 2), shuffled(x, 2))
    assert not torch.equal(unpatchify(x, 2), shuffled(x, 2))


def test_pruned_wan21_equals_diffusers_with_those_widths():
    vae = randomize(WanVAE(VAEConfig(dim=4)), seed=14)  # lightvaew2_1 is Wan 2.1 at a quarter width
    ref = reference_for(vae)
    assert ref.config.base_dim == 4
    assert_matches_reference(vae, ref, 3, tile=128)


def test_pruned_wan22_decoder_loads_from_shapes_skipping_the_distillation_heads(tmp_path):
    cfg = dataclasses.replace(WAN22, dim=16, decoder_dim=8, name="x")  # decoder narrower than the encoder
    src = randomize(WanVAE(cfg), seed=15)
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    heads = {"dynamic_feature_projection_heads.0.weight": torch.randn(8, 4), "dynamic_feature_projection_heads.0.bias": torch.randn(8)}
    path = tmp_path / "lightvae_2_2.pth"
    torch.save({**state, **heads}, path)  # no metadata: the widths come from the shapes
    with pytest.warns(CheckpointNote, match=r"lightvae_2_2.pth: skipped 2 tensor\(s\) under dynamic_feature_projection_heads\.\*"):
        vae = wanvae.load(path)
    assert (vae.config.dim, vae.config.decoder_dim, vae.config.level_shortcuts) == (16, 8, True)
    ref = reference_for(vae)
    assert ref.config.decoder_base_dim == 8
    x = clip(3, 5, 64, 64, seed=6)
    assert (vae.encode_moments(x)[0] - ref.encode(x).latent_dist.mean).abs().max() < TOL
    z = torch.randn(1, 48, 2, 4, 4, generator=torch.Generator().manual_seed(7))
    assert (vae.decode(z, raw=True) - ref.decode(z).sample).abs().max() < TOL
    # Any other stray tensor is still refused, by name.
    torch.save({**state, "decoder.extra_head.weight": torch.zeros(1)}, tmp_path / "stray.pth")
    with pytest.raises(CheckpointError, match="unexpected: decoder.extra_head.weight"):
        wanvae.load(tmp_path / "stray.pth")


def full_size_shapes(cfg: VAEConfig) -> dict[str, torch.Tensor]:
    """A published file's tensors as shapes only (the meta device): what naming reads."""
    with torch.device("meta"):
        return WanVAE(cfg).state_dict()


@pytest.mark.parametrize(
    "cfg, name, words",
    [
        (VAEConfig(), "wan2.1", "Wan 2.1 VAE"),
        (VAEConfig(image_channels=4), "qwen-image-layered", "Qwen-Image-Layered RGBA VAE"),
        (VAEConfig(upscale=2), "wan2.1-upscale2x", "2x upscaling decoder"),
        (VAEConfig(dim=24), "wan2.1-pruned", "pruned Wan 2.1 VAE (LightVAE style): widths 24 of 96"),
        (WAN22, "wan2.2", "Wan 2.2 VAE (Wan2.2-TI2V-5B)"),
        (dataclasses.replace(WAN22, decoder_dim=64), "wan2.2-pruned-decoder", "pruned decoder (LightVAE style; Wan 2.2 latents): decoder widths 64 of 256"),
    ],
)
def test_published_files_are_named_from_their_shapes(cfg, name, words):
    found = infer_config(full_size_shapes(cfg))
    assert found.name == name
    assert words in found.description


def test_a_qwen_image_folder_is_named_and_converts_both_ways(tmp_path):
    ref = randomize(AutoencoderKLQwenImage(base_dim=8), seed=16)
    ref.save_pretrained(tmp_path / "vae")
    info = describe(tmp_path / "vae")
    assert info["fits"] and info["config"]["name"] == "qwen-image" and info["model"].startswith("Qwen-Image VAE")
    vae = wanvae.load(tmp_path / "vae")
    # ComfyUI's single file (original keys) with our metadata keeps the name; back to a
    # diffusers folder, it is AutoencoderKLQwenImage's again, read by diffusers' own class.
    single = save(vae, tmp_path / "qwen_image_vae.safetensors")
    assert wanvae.load(single).config.name == "qwen-image"
    save(vae, tmp_path / "back", format="diffusers")
    again = AutoencoderKLQwenImage.from_pretrained(tmp_path / "back")
    x = clip(3, 1, 32, 32)
    assert torch.equal(again.encode(x).latent_dist.mean, ref.encode(x).latent_dist.mean)
    # Without a config or metadata the file is Wan 2.1's by every shape, and says so.
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(tmp_path / "bare.safetensors"))
    assert "Qwen-Image's VAE has the same keys and shapes" not in describe(tmp_path / "bare.safetensors")["model"]  # not 96 wide
    assert "Qwen-Image's VAE has the same keys and shapes" in infer_config(full_size_shapes(VAEConfig())).description


def test_rgba_and_rgb_inputs_are_refused_by_the_other_model():
    rgba = WanVAE(wanvae.preset("tiny-rgba"))
    with pytest.raises(ValueError, match=r"must have 4 \(RGBA\) channels in dim 1, got 3 .*add an alpha plane"):
        rgba.encode(clip(3, 1, 16, 16))
    rgb = WanVAE(wanvae.preset("tiny"))
    with pytest.raises(ValueError, match=r"must have 3 \(RGB\) channels in dim 1, got 4 .*drop alpha with x\[:, :3\]"):
        rgb.encode(clip(4, 1, 16, 16))


@pytest.fixture
def run(capsys):
    from wanvae.commands.main import main

    def call(*args):
        capsys.readouterr()
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out.out, out.err)

    return call


def write_rgba_mov(path, frames: int, w: int, h: int) -> np.ndarray:
    """A lossless RGBA clip (PNG in .mov) whose alpha ramps top to bottom; returns its pixels."""
    pixels = np.zeros((frames, h, w, 4), np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("png", rate=16)
        stream.width, stream.height, stream.pix_fmt = w, h, "rgba"
        for i in range(frames):
            pixels[i, ..., 0] = 30 * i
            pixels[i, ..., 1] = np.arange(w)[None] * 255 // w
            pixels[i, ..., 3] = np.arange(h)[:, None] * 255 // h
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels[i], format="rgba")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return pixels


def read_rgba(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgba") for f in container.decode(video=0)])


def test_cli_reads_and_writes_alpha_for_an_rgba_model(tmp_path, run):
    vae = randomize(WanVAE(wanvae.preset("tiny-rgba")), seed=17)
    weights = save(vae, tmp_path / "layered.safetensors")
    pixels = write_rgba_mov(tmp_path / "clip.mov", 5, 32, 32)
    assert run("encode", tmp_path / "clip.mov", "-o", tmp_path / "l.safetensors", "--weights", weights).returncode == 0
    latents, _ = wanvae.load_latents(tmp_path / "l.safetensors")
    source = torch.from_numpy(pixels).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
    # Alpha went in as the fourth plane, as read (the command streams: float rounding apart).
    torch.testing.assert_close(latents, vae.encode(source), atol=1e-5, rtol=0)
    opaque = torch.cat([source[:, :3], torch.ones_like(source[:, 3:])], dim=1)
    assert (latents - vae.encode(opaque)).abs().max() > 1e-2
    expected = vae.decode(latents)[0].clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()
    for suffix in (".mov", ".mkv"):
        assert run("decode", tmp_path / "l.safetensors", "-o", tmp_path / f"out{suffix}", "--weights", weights).returncode == 0
        assert np.array_equal(read_rgba(tmp_path / f"out{suffix}"), expected)  # lossless, alpha kept
    r = run("decode", tmp_path / "l.safetensors", "-o", tmp_path / "out.mp4", "--weights", weights)
    assert r.returncode == 2 and "cannot keep alpha" in r.stderr and ".mov" in r.stderr
    assert not (tmp_path / "out.mp4").exists()
    r = run("encode", tmp_path / "clip.mov", "-o", tmp_path / "m.safetensors", "--weights", weights, "--alpha", "white")
    assert r.returncode == 2 and "this RGBA model encodes alpha as it is" in r.stderr
    assert run("roundtrip", tmp_path / "clip.mov", "-o", tmp_path / "rt", "--weights", weights, "-q").returncode == 0
    # A PNG with alpha, in and out.
    from PIL import Image

    Image.fromarray(pixels[0], "RGBA").save(tmp_path / "still.png")
    assert run("encode", tmp_path / "still.png", "-o", tmp_path / "s.safetensors", "--weights", weights).returncode == 0
    assert run("decode", tmp_path / "s.safetensors", "-o", tmp_path / "s.png", "--weights", weights).returncode == 0
    assert np.asarray(Image.open(tmp_path / "s.png")).shape == (32, 32, 4)


def test_cli_decodes_at_twice_the_size_with_an_upscaling_decoder(tmp_path, run):
    from safetensors.torch import save_file

    vae = randomize(WanVAE(wanvae.preset("tiny-upscale2x")), seed=18)
    weights = tmp_path / "Wan2.1_VAE_upscale2x.safetensors"
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(weights))  # original keys, no metadata
    r = run("info", weights)
    assert r.returncode == 0 and "2x upscaling decoder" in r.stdout
    z = torch.randn(1, 16, 1, 4, 6, generator=torch.Generator().manual_seed(8))
    wanvae.save_latents(tmp_path / "z.safetensors", z)
    r = run("decode", tmp_path / "z.safetensors", "-o", tmp_path / "up.png", "--weights", weights)
    assert r.returncode == 0 and "1 frame at 96x64" in r.stdout
    r = run("decode", tmp_path / "z.safetensors", "-o", tmp_path / "up2.png", "--weights", weights, "--tile", "128")
    assert r.returncode == 2 and "at least 256 px" in r.stderr  # tiles count output pixels
    r = run("roundtrip", tmp_path / "up.png", "-o", tmp_path / "rt", "--weights", weights)
    assert r.returncode == 2 and "2x the size it encodes" in r.stderr
    # Under diffusers, the adapter gives the larger frames too.
    frames = wanvae.for_diffusers(vae).decode(vae.denormalize(z)).sample
    assert frames.shape == (1, 3, 1, 64, 96)


def test_cli_says_in_one_line_what_a_load_skipped(tmp_path, run):
    vae = randomize(WanVAE(dataclasses.replace(wanvae.preset("tiny-2.2"), decoder_dim=4)), seed=19)
    path = tmp_path / "light.pth"
    torch.save({**vae.state_dict(), "dynamic_feature_projection_heads.3.weight": torch.zeros(2)}, path)
    r = run("info", path)
    assert r.returncode == 0
    notes = [line for line in r.stderr.splitlines() if "note:" in line]
    assert notes == ["wanvae info: note: light.pth: skipped 1 tensor(s) under dynamic_feature_projection_heads.*, which no inference layer reads"]


# ---- diffusers' Qwen-Image pipelines ---------------------------------------------------------
def qwen_pipeline(kind: str, vae):
    """A real diffusers Qwen-Image pipeline around `vae`: a tiny random transformer, no text
    encoder (pass `prompt_embeds` [B, L, 16])."""
    import diffusers as d

    torch.manual_seed(0)
    transformer = d.QwenImageTransformer2DModel(
        patch_size=2, in_channels=64, out_channels=16, num_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=16, axes_dims_rope=(2, 2, 4),
    ).eval()
    cls = {"t2i": d.QwenImagePipeline, "i2i": d.QwenImageImg2ImgPipeline, "edit": d.QwenImageEditPipeline, "edit-plus": d.QwenImageEditPlusPipeline}[kind]
    parts = dict(scheduler=d.FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=None, tokenizer=None, transformer=transformer)
    pipe = cls(**parts, processor=None) if kind.startswith("edit") else cls(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def qwen_images(pipe, kind: str) -> torch.Tensor:
    from PIL import Image

    picture = Image.fromarray((np.random.RandomState(0).rand(48, 64, 3) * 255).astype(np.uint8))
    extra = {"t2i": {}, "i2i": {"image": picture, "strength": 0.6}, "edit": {"image": picture}, "edit-plus": {"image": [picture]}}[kind]
    g = torch.Generator().manual_seed(0)
    embeds = torch.randn(1, 5, 16, generator=g)
    return pipe(
        prompt_embeds=embeds, prompt_embeds_mask=torch.ones(1, 5, dtype=torch.long), height=48, width=64, num_inference_steps=2,
        generator=g, output_type="pt", **extra,
    ).images


@pytest.mark.parametrize("kind", ["t2i", "i2i", "edit", "edit-plus"])
def test_qwen_image_pipelines_give_the_same_images_with_ours(kind):
    ref = randomize(AutoencoderKLQwenImage(base_dim=8), seed=20)
    ours = wanvae.for_diffusers(ref)  # the object a pipeline holds, as `pipe.vae = for_diffusers(pipe.vae)`
    assert ours.wan.config.name == "qwen-image"
    theirs = qwen_images(qwen_pipeline(kind, ref), kind)
    mine = qwen_images(qwen_pipeline(kind, ours), kind)
    assert mine.shape == theirs.shape == (1, 3, 48, 64)
    assert (mine - theirs).abs().max() < TOL
    if kind == "edit":  # the edit pipelines encode their input at about 1 MP: exact tiles split it
        ours.enable_tiling()
        assert (qwen_images(qwen_pipeline(kind, ours), kind) - theirs).abs().max() < TOL
