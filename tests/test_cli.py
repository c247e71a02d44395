"""The installed `wanvae` command, run as a subprocess on real media."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import torch

import wanvae
from wanvae.io import video
from conftest import TINY, random_vae
import media

WANVAE = shutil.which("wanvae")


def run(*args, env=None, cwd=None):
    assert WANVAE, "the wanvae command is not installed (pip install -e .)"
    # Only what the test passes: a WANVAE_WEIGHTS of the caller's must not leak in.
    full_env = {k: v for k, v in os.environ.items() if k != "WANVAE_WEIGHTS"}
    full_env.update(env or {})
    return subprocess.run([WANVAE, *map(str, args)], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    vae = random_vae(TINY, seed=70)
    return {
        "dir": d,
        "vae": vae,
        "ckpt": wanvae.save(vae, d / "tiny.safetensors"),
        "mp4": media.write_video(d / "clip.mp4", 17, 96, 64),
        "webm": media.write_video(d / "odd.webm", 13, 100, 70, codec="libvpx-vp9"),
        "gif": media.write_video(d / "anim.gif", 9, 64, 48, codec="gif", fps=10),
        "png": media.write_image(d / "still.png", 48, 32),
        "ten": media.write_video(d / "ten.mp4", 10, 64, 48),
    }


def library_latents(f, path, size, **plan_kw):
    info = video.probe(path)
    plan = video.plan_frames(info, **plan_kw)
    # No --size: the CLI cuts the picked size out of the source's centre, no resampling.
    frames = torch.stack(list(video.read_frames(info, plan, size, "center-crop")), dim=1)[None]
    return f["vae"].encode(frames)


@pytest.mark.parametrize(
    ("name", "size", "frames"), [("mp4", (96, 64), 17), ("webm", (96, 64), 13), ("gif", (64, 48), 9), ("png", (48, 32), 1)]
)
def test_encode_equals_the_library_on_the_same_frames(files, tmp_path, name, size, frames):
    out = tmp_path / "lat.safetensors"
    r = run("encode", files[name], "-o", out, "--weights", files["ckpt"], "--tile", "none")
    assert r.returncode == 0, r.stderr
    latents, meta = wanvae.load_latents(out)
    expected = library_latents(files, files[name], size)
    assert latents.shape == expected.shape == (1, 16, 1 + (frames - 1) // 4, size[1] // 8, size[0] // 8)
    torch.testing.assert_close(latents, expected, atol=1e-6, rtol=0)
    assert meta["source"] == files[name].name
    assert meta["frames"] == str(frames) and meta["size"] == f"{size[0]}x{size[1]}"
    assert meta["checkpoint_sha256"] == wanvae.io.weights.file_sha256(files["ckpt"])
    assert meta["wanvae_version"] == wanvae.__version__ and meta["sampled"] == "false"
    assert len(meta["source_sha256"]) == 64


def test_encode_options_resample_resize_and_trim(files, tmp_path):
    out = tmp_path / "lat.pt"
    r = run("encode", files["mp4"], "-o", out, "--weights", files["ckpt"], "--fps", "8", "--size", "64x64",
            "--frame-policy", "trim", "--start", "0.125", "--format", "pt", "-q")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""  # --quiet
    latents, meta = wanvae.load_latents(out)
    # From 0.125 s at 8 fps: source frames 2, 4, ..., 16 -> 8 frames, trimmed to 5.
    expected = library_latents(files, files["mp4"], (64, 64), start=0.125, fps=8, frame_policy="trim")
    torch.testing.assert_close(latents, expected, atol=1e-6, rtol=0)
    assert (meta["frames"], meta["trimmed"], meta["fps"], meta["resize"]) == ("5", "3", "8", "crop")


def test_decode_writes_a_video_with_the_right_frames_size_and_rate(files, tmp_path):
    lat = tmp_path / "lat.safetensors"
    assert run("encode", files["mp4"], "-o", lat, "--weights", files["ckpt"]).returncode == 0
    out = tmp_path / "back.mp4"
    r = run("decode", lat, "-o", out, "--weights", files["ckpt"])
    assert r.returncode == 0, r.stderr
    info = video.probe(out)
    assert (info.frames, info.width, info.height, info.fps) == (17, 96, 64, 16.0)
    out12 = tmp_path / "back12.mp4"
    assert run("decode", lat, "-o", out12, "--weights", files["ckpt"], "--fps", "12").returncode == 0
    assert video.probe(out12).fps == 12.0
    # One latent frame decodes to a PNG.
    one = tmp_path / "one.safetensors"
    assert run("encode", files["png"], "-o", one, "--weights", files["ckpt"]).returncode == 0
    png = tmp_path / "one.png"
    assert run("decode", one, "-o", png, "--weights", files["ckpt"]).returncode == 0
    assert video.probe(png).frames == 1


def test_weights_from_the_environment_and_never_a_silent_fallback(files, tmp_path):
    out = tmp_path / "lat.safetensors"
    r = run("encode", files["png"], "-o", out, env={"WANVAE_WEIGHTS": str(files["ckpt"])})
    assert r.returncode == 0, r.stderr
    r = run("encode", files["png"], "-o", tmp_path / "b.safetensors")
    assert r.returncode == 2
    assert "no checkpoint: pass --weights CKPT (or --weights demo, the bundled demo model) or set WANVAE_WEIGHTS" in r.stderr


def test_roundtrip_reports_and_writes_its_comparison(files, tmp_path):
    out = tmp_path / "rt"
    r = run("roundtrip", files["mp4"], "--weights", files["ckpt"], "-o", out)
    assert r.returncode == 0, r.stderr
    assert "PSNR" in r.stdout and "SSIM" in r.stdout and "frame   16" in r.stdout
    report = json.loads((out / "metrics.json").read_text())
    assert len(report["psnr_per_frame"]) == len(report["ssim_per_frame"]) == 17
    side = video.probe(out / "side_by_side.mp4")
    assert (side.frames, side.width, side.height) == (17, 3 * 96, 64)
    from wanvae.io.labels import label_bar

    bar = label_bar(["original", "reconstruction", "difference"], 96).shape[1]  # the column labels above the frames
    assert video.probe(out / "frames.png").height == bar + 3 * 64


def test_info_and_convert(files, tmp_path):
    r = run("info", files["ckpt"])
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["kind"] == "checkpoint" and info["format"] == "original" and info["config"]["dim"] == 8
    assert info["tensors"] == 194
    diffusers_dir = tmp_path / "diffusers"
    r = run("convert", files["ckpt"], diffusers_dir, "--to", "diffusers")
    assert r.returncode == 0, r.stderr
    assert json.loads(run("info", diffusers_dir).stdout)["format"] == "diffusers"
    back = tmp_path / "back.pth"
    assert run("convert", diffusers_dir, "-o", back, "--to", "original").returncode == 0
    torch.testing.assert_close(wanvae.load(back).state_dict(), files["vae"].state_dict(), atol=0, rtol=0)
    lat = tmp_path / "l.safetensors"
    run("encode", files["png"], "-o", lat, "--weights", files["ckpt"])
    li = json.loads(run("info", lat).stdout)
    assert li["kind"] == "latents" and li["shape"] == [16, 1, 4, 6] and li["metadata"]["source"] == "still.png"


def _fails(result, code, *needles):
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_an_existing_output_needs_overwrite_and_debug_shows_the_traceback(files, tmp_path):
    """The one-line errors themselves, inputs of every kind, are in test_hostile.py."""
    ck = ("--weights", files["ckpt"])
    out = tmp_path / "lat.safetensors"
    out.write_text("keep me")
    _fails(run("encode", files["png"], "-o", out, *ck), 2, "already exists", "--overwrite")
    assert out.read_text() == "keep me"
    assert run("encode", files["png"], "-o", out, *ck, "--overwrite").returncode == 0
    r = run("encode", tmp_path / "missing.mp4", "-o", out, *ck, "--debug")
    assert r.returncode == 2 and "Traceback" in r.stderr


def test_usage_errors_exit_2(files):
    assert run("encode").returncode == 2
    assert run("encode", files["mp4"], "--size", "big").returncode == 2
    assert run("frobnicate").returncode == 2
    help_text = run("encode", "--help").stdout
    for option in ("--size", "--resize", "--max-area", "--start", "--fps", "--frames", "--frame-policy", "--tile", "--sample", "--seed"):
        assert option in help_text
