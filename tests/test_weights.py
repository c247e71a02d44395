"""Checkpoints: the real formats, strict loading, clear errors, nothing unpickled."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

import wanvae
from wanvae.io.weights import CheckpointError, diffusers_to_original, infer_config, original_to_diffusers
from conftest import TINY, random_vae, random_video


def same_outputs(a, b):
    x = random_video(1, 5, 16, 16, seed=40)
    torch.testing.assert_close(a.encode(x), b.encode(x), atol=0, rtol=0)


@pytest.mark.parametrize("name", ["vae.safetensors", "vae.pth"])
def test_original_layout_round_trip(tmp_path, tiny_vae, name):
    path = wanvae.save(tiny_vae, tmp_path / name)
    loaded = wanvae.load(path)
    assert loaded.config == tiny_vae.config
    for k, v in tiny_vae.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    same_outputs(tiny_vae, loaded)
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not a private temp


def test_safetensors_metadata_carries_config_and_latent_statistics(tmp_path):
    cfg = wanvae.VAEConfig(dim=8, z_dim=4, latents_mean=(0.1, 0.2, 0.3, 0.4), latents_std=(1, 2, 3, 4), name="mine")
    vae = random_vae(cfg, seed=41)
    loaded = wanvae.load(wanvae.save(vae, tmp_path / "v.safetensors"))
    assert loaded.config == cfg
    torch.testing.assert_close(loaded.latents_std.flatten(), torch.tensor([1.0, 2, 3, 4]))


def test_pth_is_a_plain_state_dict_like_the_original(tmp_path, tiny_vae):
    path = wanvae.save(tiny_vae, tmp_path / "vae.pth")
    sd = torch.load(path, weights_only=True)
    assert list(sd) == list(tiny_vae.state_dict())


def test_diffusers_layout_round_trip_and_from_pretrained(tmp_path, tiny_vae):
    from diffusers import AutoencoderKLWan

    out = wanvae.save(tiny_vae, tmp_path / "diffusers_vae", format="diffusers")
    assert (out / "config.json").exists() and (out / "diffusion_pytorch_model.safetensors").exists()
    ref = AutoencoderKLWan.from_pretrained(out).eval()
    x = random_video(1, 5, 16, 16, seed=42)
    with torch.no_grad():
        theirs = ref.encode(x).latent_dist.mean
    ours, _ = tiny_vae.encode_moments(x)
    assert (ours - theirs).abs().max() < 1e-5
    # Back in: the folder, and the bare weights file (config inferred from shapes).
    same_outputs(tiny_vae, wanvae.load(out))
    same_outputs(tiny_vae, wanvae.load(out / "diffusion_pytorch_model.safetensors"))
    # Saving again over it replaces it whole.
    wanvae.save(tiny_vae, out, format="diffusers")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]


def test_key_maps_are_inverse_and_cover_the_full_model():
    cfg = wanvae.VAEConfig()
    keys = list(wanvae.WanVAE(cfg).state_dict())
    mapped = [original_to_diffusers(k, cfg) for k in keys]
    assert len(set(mapped)) == len(keys)
    assert [diffusers_to_original(k, cfg) for k in mapped] == keys
    assert original_to_diffusers("decoder.upsamples.11.resample.1.weight", cfg) == "decoder.up_blocks.2.upsamplers.0.resample.1.weight"
    assert original_to_diffusers("decoder.upsamples.12.residual.6.bias", cfg) == "decoder.up_blocks.3.resnets.0.conv2.bias"
    assert original_to_diffusers("encoder.middle.2.residual.0.gamma", cfg) == "encoder.mid_block.resnets.1.norm1.gamma"


@pytest.mark.parametrize(
    "cfg",
    [
        wanvae.VAEConfig(),
        TINY,
        wanvae.VAEConfig(dim=4, z_dim=4, dim_mult=(1, 2, 2), temporal_downsample=(True, False), num_res_blocks=1),
        wanvae.VAEConfig(dim=4, attn_scales=(0.5,)),
    ],
)
def test_config_is_inferred_from_shapes(cfg):
    with torch.device("meta"):
        sd = wanvae.WanVAE(cfg).state_dict()
    inferred = infer_config(sd)
    for field in ("dim", "z_dim", "dim_mult", "num_res_blocks", "attn_scales", "temporal_downsample"):
        assert getattr(inferred, field) == getattr(cfg, field), field


def test_truncated_file_is_a_clear_error(tmp_path, tiny_vae):
    for name in ("vae.safetensors", "vae.pth"):
        path = wanvae.save(tiny_vae, tmp_path / name)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match=rf"{name}: not a readable"):
            wanvae.load(path)


def test_wrong_shape_missing_and_unexpected_keys_are_named(tmp_path, tiny_vae):
    sd = {k: v.clone() for k, v in tiny_vae.state_dict().items()}
    sd["decoder.head.2.bias"] = torch.zeros(5)
    path = tmp_path / "bad.safetensors"
    save_file(sd, str(path), metadata={"wanvae_config": TINY.to_json()})
    with pytest.raises(CheckpointError, match=r"wrong shape: decoder.head.2.bias \(5,\) \(model wants \(3,\)\)"):
        wanvae.load(path)
    del sd["decoder.head.2.bias"]
    sd["decoder.extra"] = torch.zeros(1)
    save_file(sd, str(path), metadata={"wanvae_config": TINY.to_json()})
    with pytest.raises(CheckpointError, match=r"missing: decoder.head.2.bias; unexpected: decoder.extra"):
        wanvae.load(path)


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"model.diffusion.weight": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not a Wan VAE checkpoint"):
        wanvae.load(path)


def test_loading_never_unpickles_arbitrary_objects(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"encoder.conv1.weight": Evil()}, f)
    with pytest.raises(CheckpointError, match="holds pickled Python objects") as refused:
        wanvae.load(path)
    assert not marker.exists()
    # Our words, on one line: no torch advice to turn the protection off.
    assert "weights_only" not in str(refused.value) and "\n" not in str(refused.value)


def test_load_puts_the_model_on_the_device_and_dtype(tmp_path, tiny_vae):
    loaded = wanvae.load(wanvae.save(tiny_vae, tmp_path / "v.safetensors"), dtype=torch.float64)
    assert loaded.dtype == torch.float64 and not loaded.training
    assert loaded.latents_mean.dtype == torch.float64


def test_missing_path_and_unknown_suffix(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        wanvae.load(tmp_path / "nope.pth")
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(CheckpointError, match="unknown checkpoint type"):
        wanvae.load(tmp_path / "w.txt")


@pytest.mark.skipif(not os.environ.get("WANVAE_WEIGHTS"), reason="set WANVAE_WEIGHTS to a real Wan2.1_VAE checkpoint")
def test_real_checkpoint_round_trips_a_smooth_clip():
    vae = wanvae.load(os.environ["WANVAE_WEIGHTS"])
    assert vae.config.dim == 96 and vae.config.z_dim == 16
    t = torch.linspace(0, 1, 9).view(1, 1, 9, 1, 1)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 96), indexing="ij")
    video = torch.stack([torch.sin(3 * xx + 2 * t[0, 0]), torch.cos(2 * yy - 3 * t[0, 0]), torch.sin(xx * yy * 4 + t[0, 0])], dim=0)
    video = (0.8 * video).unsqueeze(0)  # [1, 3, 9, 64, 96]
    out = vae.decode(vae.encode(video))
    mse = (out - video).pow(2).mean().item()
    psnr = 10 * torch.log10(torch.tensor(4.0 / mse)).item()
    assert psnr > 30, psnr


def test_half_models_load_only_their_half_and_give_the_same_numbers(tmp_path, tiny_vae):
    path = tmp_path / "m.safetensors"
    wanvae.save(tiny_vae, path)
    enc = wanvae.load(path, parts="encoder")
    dec = wanvae.load(path, parts="decoder")
    assert all(k.startswith(("encoder.", "conv1.")) for k in enc.state_dict())
    assert all(k.startswith(("decoder.", "conv2.")) for k in dec.state_dict())
    assert len(enc.state_dict()) + len(dec.state_dict()) == len(tiny_vae.state_dict())
    x = random_video(1, 5, 32, 32, seed=7)
    z = tiny_vae.encode(x)
    assert torch.equal(enc.encode(x), z)
    assert torch.equal(dec.decode(z), tiny_vae.decode(z))
    with pytest.raises(ValueError, match="holds only the encoder .* to decode"):
        enc.decode(z)
    with pytest.raises(ValueError, match="holds only the decoder .* to encode"):
        wanvae.StreamEncoder(dec)
    with pytest.raises(ValueError, match="a checkpoint needs both halves"):
        wanvae.save(enc, tmp_path / "half.safetensors")
    with pytest.raises(ValueError, match="parts must be one of"):
        wanvae.WanVAE(TINY, parts="middle")


def test_a_half_load_still_refuses_an_incomplete_checkpoint(tmp_path, tiny_vae):
    state = {k: v.contiguous() for k, v in tiny_vae.state_dict().items() if not k.startswith("decoder.head.")}
    save_file(state, str(tmp_path / "cut.safetensors"), metadata={"wanvae_config": TINY.to_json()})
    with pytest.raises(CheckpointError, match="missing: decoder.head"):
        wanvae.load(tmp_path / "cut.safetensors", parts="encoder")


def test_a_model_too_big_for_free_memory_is_refused_before_allocation():
    from wanvae.coding.tiling import available_memory
    from wanvae.io.weights import _check_room

    free = available_memory(torch.device("cpu"))
    shapes = {"w": torch.empty(free // 4 + 2**28, device="meta")}  # more fp32 numbers than fit
    with pytest.raises(CheckpointError, match=r"needs .* GiB as float32 on cpu, and .* GiB is free"):
        _check_room(shapes, torch.float32, "cpu", "big.safetensors")
    _check_room({"w": torch.empty(1000, device="meta")}, torch.float32, "cpu", "small.safetensors")
