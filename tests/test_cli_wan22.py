"""Every `wanvae` command with a Wan 2.2 checkpoint: 48 channels, 16x sizes, the 2.2 rules."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import torch

import wanvae
from wanvae.io import video
from wanvae.cache.index import read_index
from wanvae.testing import randomize
from test_cli import _fails, run
import media


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("media22")
    vae = randomize(wanvae.WanVAE(wanvae.preset("tiny-2.2")), seed=222)
    pth = d / "Wan2.2_VAE.pth"  # the released format: a plain state dict, no metadata
    torch.save({k: v.clone() for k, v in vae.state_dict().items()}, pth)
    wan21 = randomize(wanvae.WanVAE(wanvae.preset("tiny")), seed=223)
    return {
        "dir": d,
        "vae": vae,
        "pth": pth,
        "wan21": wanvae.save(wan21, d / "wan21.safetensors"),
        "mp4": media.write_video(d / "clip.mp4", 17, 96, 64),
        "odd": media.write_video(d / "odd.mp4", 9, 100, 70),
        "png": media.write_image(d / "still.png", 96, 64),
    }


def frames_of(path, size, **plan_kw):
    info = video.probe(path)
    plan = video.plan_frames(info, **plan_kw)
    return torch.stack(list(video.read_frames(info, plan, size)), dim=1)[None]


def test_encode_decode_roundtrip_with_a_released_format_checkpoint(files, tmp_path):
    lat = tmp_path / "clip.safetensors"
    r = run("encode", files["mp4"], "-o", lat, "--weights", files["pth"], "--tile", "none")
    assert r.returncode == 0, r.stderr
    latents, meta = wanvae.load_latents(lat)
    assert latents.shape == (1, 48, 5, 4, 6)
    torch.testing.assert_close(latents, files["vae"].encode(frames_of(files["mp4"], (96, 64))), atol=1e-6, rtol=0)
    assert meta["size"] == "96x64" and meta["frames"] == "17"
    out = tmp_path / "back.mp4"
    r = run("decode", lat, "-o", out, "--weights", files["pth"])
    assert r.returncode == 0, r.stderr
    info = video.probe(out)
    assert (info.frames, info.width, info.height) == (17, 96, 64)
    r = run("roundtrip", files["mp4"], "--weights", files["pth"], "-o", tmp_path / "report", "--tile", "256")
    assert r.returncode == 0, r.stderr
    assert len(json.loads((tmp_path / "report" / "metrics.json").read_text())["psnr_per_frame"]) == 17


def test_an_image_encodes_alone_as_ti2v_does(files, tmp_path):
    lat = tmp_path / "still.safetensors"
    assert run("encode", files["png"], "-o", lat, "--weights", files["pth"]).returncode == 0
    latents, _ = wanvae.load_latents(lat)
    assert latents.shape == (1, 48, 1, 4, 6)
    torch.testing.assert_close(latents, files["vae"].encode(frames_of(files["png"], (96, 64))), atol=1e-6, rtol=0)


def test_sizes_follow_the_2_2_rules(files, tmp_path):
    out = tmp_path / "o.safetensors"
    ck = ("--weights", files["pth"])
    _fails(run("encode", files["mp4"], "-o", out, *ck, "--size", "88x64"), 2, "--size 88x64", "multiples of 16", "80x64 or 96x64")
    # Sizes wanvae picks itself are multiples of 32, what TI2V-5B's transformer takes.
    assert run("encode", files["odd"], "-o", out, *ck).returncode == 0
    assert wanvae.load_latents(out)[1]["size"] == "96x64"
    assert run("encode", files["odd"], "-o", out, *ck, "--max-area", "4000", "--overwrite").returncode == 0
    w, h = (int(v) for v in wanvae.load_latents(out)[1]["size"].split("x"))
    assert w % 32 == 0 and h % 32 == 0 and w * h <= 4000


def test_latents_of_the_other_family_are_refused_in_one_line(files, tmp_path):
    lat21 = tmp_path / "wan21.safetensors"
    assert run("encode", files["png"], "-o", lat21, "--weights", files["wan21"]).returncode == 0
    _fails(run("decode", lat21, "-o", tmp_path / "x.png", "--weights", files["pth"]), 2, "Wan 2.1 latents", "Wan 2.2 VAE")
    lat22 = tmp_path / "wan22.safetensors"
    assert run("encode", files["png"], "-o", lat22, "--weights", files["pth"]).returncode == 0
    _fails(run("decode", lat22, "-o", tmp_path / "x.png", "--weights", files["wan21"]), 2, "Wan 2.2 latents", "Wan 2.1 VAE")
    assert not (tmp_path / "x.png").exists()


def test_info_names_the_family_and_convert_goes_both_ways(files, tmp_path):
    r = run("info", files["pth"])
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["family"] == "Wan 2.2" and info["fits"] and info["config"]["z_dim"] == 48 and info["tensors"] == 196
    folder = tmp_path / "diffusers"
    assert run("convert", files["pth"], folder, "--to", "diffusers").returncode == 0
    from diffusers import AutoencoderKLWan

    theirs = AutoencoderKLWan.from_pretrained(folder)
    assert theirs.config.is_residual and theirs.config.z_dim == 48
    assert json.loads(run("info", folder).stdout)["family"] == "Wan 2.2"
    back = tmp_path / "back.pth"
    assert run("convert", folder, "-o", back, "--to", "original").returncode == 0
    torch.testing.assert_close(wanvae.load(back).state_dict(), files["vae"].state_dict(), atol=0, rtol=0)
    broken = {k: v for k, v in files["vae"].state_dict().items() if not k.startswith("decoder.upsamples.1.")}
    torch.save(broken, tmp_path / "broken.pth")
    _fails(run("info", tmp_path / "broken.pth"), 2, "fits no known Wan VAE", "as Wan 2.2: missing: decoder.upsamples.1.")


def test_cache_encodes_48_channels_and_checks_buckets_against_16(files, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(files["mp4"], src / "a.mp4")
    cmd = [shutil.which("wanvae"), "cache", src, "-o", tmp_path / "out", "--weights", files["pth"], "--frames", "9"]
    r = subprocess.run([*cmd, "--buckets", "96x64,88x88"], capture_output=True, text=True)
    assert r.returncode == 2 and "88x88" in r.stderr and "multiples of 16" in r.stderr, r.stderr
    r = subprocess.run([*cmd, "--buckets", "96x64,64x96"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (row,) = [row for row in read_index(tmp_path / "out") if row["status"] == "ok"]
    latents, _ = wanvae.load_latents(tmp_path / "out" / row["output"])
    assert latents.shape == (1, 48, 3, 4, 6)


def test_train_builds_and_fine_tunes_a_2_2_model(files, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(files["png"], data / "a.png")
    out = tmp_path / "m.safetensors"
    cmd = [shutil.which("wanvae"), "train", data, "-o", out, "--steps", "2", "--batch", "1", "--val-every", "2", "--quiet"]
    r = subprocess.run([*cmd, "--config", "tiny-2.2", "--clip", "32x32x5"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert wanvae.load(out).config == wanvae.preset("tiny-2.2")
    r = subprocess.run([*cmd, "--init", files["pth"], "--clip", "40x32x5", "--overwrite"], capture_output=True, text=True)
    assert r.returncode == 2 and "multiples of 16" in r.stderr and "Wan 2.2" in r.stderr, r.stderr


def test_latents_without_a_frame_rate_decode_at_ti2v_s_24_fps(files, tmp_path):
    bare = tmp_path / "generated.safetensors"  # what a pipeline might save: the tensor, no metadata
    wanvae.save_latents(bare, torch.randn(1, 48, 2, 4, 6))
    assert run("decode", bare, "-o", tmp_path / "v.mp4", "--weights", files["pth"]).returncode == 0
    info = video.probe(tmp_path / "v.mp4")
    assert (info.frames, info.fps, info.width, info.height) == (5, 24.0, 96, 64)
