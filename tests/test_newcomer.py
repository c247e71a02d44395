"""What a new user met in their first hour (issue 37), each fixed and kept fixed.

The commands run in-process (`commands.main.main`), which is what the console script calls:
test_cli and test_hostile run the installed command in subprocesses already, and each
subprocess costs a torch import.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

import media
import wanvae
from conftest import TINY, random_vae
from wanvae.cache.index import read_index
from wanvae.cache.plan import CacheOptions
from wanvae.cache.run import run_cache


@pytest.fixture
def run(capsys, monkeypatch):
    """A command in this process: (exit status, stdout, stderr)."""
    from wanvae.commands.main import main

    def call(*args, env=None):
        monkeypatch.delenv("WANVAE_WEIGHTS", raising=False)
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
        capsys.readouterr()
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out.out, out.err)

    return call


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("newcomer")
    src = d / "src"
    src.mkdir()
    media.write_video(src / "astronaut_pan.mp4", 13, 64, 48)
    media.write_image(src / "still.png", 48, 32)
    videos = d / "videos"
    videos.mkdir()
    media.write_video(videos / "astronaut_pan.mp4", 13, 64, 48)
    return {"dir": d, "src": src, "videos": videos, "ckpt": wanvae.save(random_vae(TINY, seed=95), d / "tiny.safetensors")}


def test_a_short_clip_names_the_fix_once(world, tmp_path, run):
    r = run("cache", world["videos"], "-o", tmp_path / "c", "--weights", world["ckpt"], "--tile", "none")
    assert r.returncode == 3
    line, = r.stderr.strip().splitlines()
    assert line.count("astronaut_pan.mp4") == 1  # the file named once, not twice
    assert "13 frames from 0s, a clip needs 81" in line and "--frames 13 or fewer" in line and "--mode full" in line
    assert "from 1 frames" not in line


def test_weights_demo_names_the_bundled_model_in_every_command(world, tmp_path, run):
    png = world["src"] / "still.png"
    r = run("encode", png, "-o", tmp_path / "x.safetensors", "--weights", "demo", "--size", "32x32")
    assert r.returncode == 0, r.stderr
    assert "from 1 frame at 32x32" in r.stdout  # not "1 frames"
    r = run("decode", tmp_path / "x.safetensors", "-o", tmp_path / "x.png", env={"WANVAE_WEIGHTS": "demo"})
    assert r.returncode == 0, r.stderr
    assert "1 frame at 32x32 in" in r.stdout and "fps" not in r.stdout  # a PNG has no frame rate
    r = run("info", "demo")
    assert r.returncode == 2 and "demo" in r.stderr  # `info` takes a file, and says so


def test_a_clip_without_its_batch_axis_is_named_as_given():
    vae = random_vae(TINY, seed=96)
    with pytest.raises(ValueError, match=r"video \(3, 17, 64, 64\) reads as an image batch .* x\[None\]"):
        vae.encode(torch.rand(3, 17, 64, 64) * 2 - 1)


def test_convert_takes_the_layout_from_the_output_and_keeps_dtype_and_name(tmp_path, run):
    vae = random_vae(wanvae.VAEConfig(dim=8, name="my-vae"), seed=97).half()
    src = wanvae.save(vae, tmp_path / "mine.safetensors")
    r = run("convert", src, tmp_path / "folder")
    assert r.returncode == 0, r.stderr
    assert "diffusers layout" in r.stdout and "float16" in r.stdout and "'my-vae'" in r.stdout
    r = run("convert", tmp_path / "folder", tmp_path / "back.safetensors")
    assert r.returncode == 0, r.stderr
    back = wanvae.load(tmp_path / "back.safetensors", dtype=None)
    assert back.config.name == "my-vae"
    info = json.loads(run("info", tmp_path / "back.safetensors").stdout)
    assert info["dtypes"] == ["float16"]
    assert (tmp_path / "back.safetensors").stat().st_size < src.stat().st_size * 1.1  # fp16 stays fp16
    r = run("convert", src, tmp_path / "x.safetensors", "--to", "diffusers")
    assert r.returncode == 2 and "is a folder" in r.stderr


def test_a_cache_rerun_keeps_earlier_clips_listed_and_records_frame_rates(world, tmp_path):
    out = tmp_path / "c"
    first = run_cache(world["videos"], out, world["ckpt"], CacheOptions(frames=9), workers=1, tile=None)
    second = run_cache(world["videos"], out, world["ckpt"], CacheOptions(frames=5), workers=1, tile=None)
    assert first.done == second.done == 1
    rows = [r for r in read_index(out) if r["status"] == "ok"]
    assert sorted(r["frames"] for r in rows) == [5, 9]  # both files in the folder, both listed
    assert {p.name for p in out.glob("*.safetensors")} == {r["output"] for r in rows}
    assert all(r["fps"] for r in rows)  # the clip's rate as read, not null
