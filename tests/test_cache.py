"""`wanvae cache`: plans, outputs equal to `wanvae encode`, resumability, SIGKILL, Ray."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import time

import pytest
import torch

import wanvae
from wanvae.cache.index import read_index
from wanvae.cache.plan import CacheOptions, Source, find_sources, nearest_bucket, plan_source
from wanvae.cache.run import run_cache
from conftest import TINY, random_vae
import media


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("cache")
    src = d / "src"
    (src / "sub").mkdir(parents=True)
    media.write_video(src / "a.mp4", 21, 64, 48)
    media.write_video(src / "sub" / "b.webm", 13, 48, 64, codec="libvpx-vp9")
    media.write_image(src / "c.png", 40, 32)
    (src / "broken.mp4").write_text("not a video")
    vae = random_vae(TINY, seed=80)
    return {"dir": d, "src": src, "ckpt": wanvae.save(vae, d / "tiny.safetensors"), "vae": vae}


def ok_rows(folder):
    return [r for r in read_index(folder) if r["status"] == "ok"]


def test_plans_for_each_mode_and_bucket(dataset):
    a = Source(str(dataset["src"] / "a.mp4"), "a.mp4")  # 21 frames
    starts = lambda opts: [j.start_index for j in plan_source(a, opts)]  # noqa: E731
    assert starts(CacheOptions(frames=9)) == [0]
    assert starts(CacheOptions(frames=9, mode="uniform", clips=3)) == [0, 6, 12]
    assert starts(CacheOptions(frames=9, mode="slide", stride=5)) == [0, 5, 10]
    full = plan_source(a, CacheOptions(frames=None, mode="full"))
    assert [(j.start_index, j.frames) for j in full] == [(0, 21)]
    assert [len(j.indices) for j in plan_source(a, CacheOptions(frames=5, fps=8))] == [5]
    assert plan_source(a, CacheOptions(frames=5, fps=8))[0].indices == (0, 2, 4, 6, 8)
    assert nearest_bucket(64, 48, ((64, 64), (96, 48), (48, 96))) == (64, 64)
    assert nearest_bucket(48, 100, ((64, 64), (96, 48), (48, 96))) == (48, 96)
    assert plan_source(a, CacheOptions(frames=9, buckets=((32, 32), (48, 32))))[0].size == (48, 32)
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        CacheOptions(frames=10)
    with pytest.raises(ValueError, match="needs --stride"):
        CacheOptions(mode="slide")
    names = {j.output_name for j in plan_source(a, CacheOptions(frames=9, mode="slide", stride=5))}
    assert len(names) == 3 and all(n.startswith("a-") and n.endswith("-64x48.safetensors") for n in names)


def test_manifests(dataset, tmp_path):
    csv_path = tmp_path / "m.csv"
    a = dataset["src"] / "a.mp4"
    csv_path.write_text(f"path,start,frames,fps,size,caption\n{a},0.5,5,,32x32,a cat\n{a},,9,8,,\n")
    rows = find_sources(csv_path)
    assert rows[0] == Source(str(a), str(a), 0.5, 5, None, (32, 32), "a cat")
    assert (rows[1].frames, rows[1].fps, rows[1].caption) == (9, 8.0, "")
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text(json.dumps({"path": "src/a.mp4", "caption": "x"}) + "\n")
    shutil.copytree(dataset["src"], tmp_path / "src")
    assert find_sources(jsonl)[0].path == str(tmp_path / "src" / "a.mp4")
    assert rows[1].occurrence == 1  # the same source twice: each row its own clips and index rows
    # A bad row fails alone, named by its line; the rows around it still count.
    (tmp_path / "bad.jsonl").write_text('{oops\n{"path": "src/a.mp4", "fps": "inf"}\n{"path": "src/a.mp4"}\n')
    bad, nan_fps, good = find_sources(tmp_path / "bad.jsonl")
    assert bad.rel == "bad.jsonl:1" and "not a JSON object" in bad.error
    assert nan_fps.rel == "bad.jsonl:2" and "fps" in nan_fps.error and "not a finite number" in nan_fps.error
    assert good.error == "" and good.path == str(tmp_path / "src" / "a.mp4")


def test_cache_outputs_index_and_failures(dataset, tmp_path):
    out = tmp_path / "out"
    s = run_cache(dataset["src"], out, dataset["ckpt"], CacheOptions(frames=9, mode="uniform", clips=2), workers=2, tile=None)
    assert (s.done, s.skipped, s.total) == (4, 0, 4)
    failed = {row["source"]: row for row in read_index(out) if row["status"] == "failed"}
    assert set(failed) == {"broken.mp4", "c.png"}
    assert "not a readable video" in failed["broken.mp4"]["error"] and "too short for one clip" in failed["c.png"]["error"]
    rows = ok_rows(out)
    assert len(rows) == 4
    for row in rows:
        assert set(row) == {"source", "start", "frames", "fps", "size", "latent_shape", "output", "status", "error", "caption"}
        latents, meta = wanvae.load_latents(out / row["output"])
        assert list(latents.shape[1:]) == row["latent_shape"]
        assert meta["frames"] == "9" and meta["checkpoint_sha256"] == wanvae.io.weights.file_sha256(dataset["ckpt"])
    # The same clip through `encode_file` (what `wanvae encode` runs) gives the same tensor.
    row = next(r for r in rows if r["source"] == "a.mp4" and r["start"] > 0)
    ref, ref_meta = wanvae.encode_file(dataset["src"] / "a.mp4", dataset["vae"], start=row["start"], frames=9)
    latents, meta = wanvae.load_latents(out / row["output"])
    torch.testing.assert_close(latents, ref, atol=1e-6, rtol=0)
    for key in ("source", "source_sha256", "frames", "fps", "size", "source_size", "resize", "dtype", "latent_shape"):
        assert meta[key] == ref_meta[key], key
    # A rerun does nothing twice; a damaged or stale output is redone.
    s = run_cache(dataset["src"], out, dataset["ckpt"], CacheOptions(frames=9, mode="uniform", clips=2), workers=1, tile=None)
    assert (s.done, s.skipped) == (0, 4)
    victim = out / rows[0]["output"]
    victim.write_bytes(victim.read_bytes()[:100])
    s = run_cache(dataset["src"], out, dataset["ckpt"], CacheOptions(frames=9, mode="uniform", clips=2), workers=1, tile=None)
    assert (s.done, s.skipped) == (1, 3)
    other = wanvae.save(random_vae(TINY, seed=81), tmp_path / "other.safetensors")
    s = run_cache(dataset["src"], out, other, CacheOptions(frames=9, mode="uniform", clips=2), workers=1, tile=None)
    assert (s.done, s.skipped) == (4, 0)  # another checkpoint: every clip is stale
    assert len(ok_rows(out)) == 4


def test_cli_exit_status_and_summary(dataset, tmp_path):
    wanvae_cmd = shutil.which("wanvae")
    r = subprocess.run([wanvae_cmd, "cache", dataset["src"], "-o", tmp_path / "o", "--weights", dataset["ckpt"], "--frames", "9"],
                       capture_output=True, text=True)
    assert r.returncode == 3, r.stderr
    assert "2 clips encoded" in r.stdout and "2 failed" in r.stdout
    assert len([line for line in r.stderr.splitlines() if "failed:" in line]) == 2
    good = tmp_path / "good"
    good.mkdir()
    shutil.copy(dataset["src"] / "a.mp4", good)
    r = subprocess.run([wanvae_cmd, "cache", good, "-o", tmp_path / "o2", "--weights", dataset["ckpt"], "--frames", "9"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([wanvae_cmd, "cache", good, "-o", tmp_path / "o3", "--weights", dataset["ckpt"], "--frames", "10"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "1 + 4k" in r.stderr


def test_a_run_clears_the_temporaries_a_killed_run_left_and_nothing_else(dataset, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    leftovers = [out / ".a-83b0a25e-f000000-n9-64x48.p6r0l2vb.tmp.safetensors", out / ".index.x1y2z3.tmp.jsonl"]
    for path in leftovers:
        path.write_bytes(b"half a file")
    mine = out / "notes.txt"
    mine.write_text("the user's own")
    run_cache(dataset["src"], out, dataset["ckpt"], CacheOptions(frames=9, mode="uniform", clips=1), workers=1, tile=None)
    assert not any(path.exists() for path in leftovers)
    assert mine.read_text() == "the user's own"
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_sigkill_at_a_random_moment_then_rerun_completes_consistently(dataset, tmp_path):
    src = tmp_path / "many"
    src.mkdir()
    for i in range(6):
        media.write_video(src / f"v{i}.mp4", 25, 64, 48)
    out = tmp_path / "out"
    cmd = [shutil.which("wanvae"), "cache", src, "-o", out, "--weights", dataset["ckpt"], "--frames", "9",
           "--mode", "slide", "--stride", "8", "--workers", "1", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob("*.safetensors"))) < 2:
        time.sleep(0.05)
    time.sleep(random.uniform(0, 1.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = sorted(p.name for p in out.iterdir())
    time.sleep(1.0)  # orphaned workers, if any, must not write
    assert sorted(p.name for p in out.iterdir()) == before
    for name in before:  # whatever is there is whole
        if name.endswith(".safetensors") and not name.startswith("."):
            wanvae.load_latents(out / name)
    assert subprocess.run(cmd).returncode == 0
    rows = read_index(out)
    outputs = [r["output"] for r in rows]
    assert len(rows) == 18 and len(set(outputs)) == 18 and all(r["status"] == "ok" for r in rows)
    assert sorted(p.name for p in out.glob("*.safetensors")) == sorted(outputs)
    for name in outputs:
        wanvae.load_latents(out / name)


def test_ray_engine_writes_what_the_local_engine_writes(dataset, tmp_path):
    pytest.importorskip("ray")
    opts = CacheOptions(frames=9, mode="uniform", clips=2)
    local = run_cache(dataset["src"], tmp_path / "local", dataset["ckpt"], opts, workers=1, tile=None)
    remote = run_cache(dataset["src"], tmp_path / "ray", dataset["ckpt"], opts, engine="ray", workers=2, tile=None)
    assert (local.done, len(local.failed)) == (remote.done, len(remote.failed)) == (4, 2)
    key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
    assert sorted(map(key, read_index(tmp_path / "local"))) == sorted(map(key, read_index(tmp_path / "ray")))
    names = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "ray").iterdir())
    for name in names:
        if name.endswith(".safetensors"):
            a, ma = wanvae.load_latents(tmp_path / "local" / name)
            b, mb = wanvae.load_latents(tmp_path / "ray" / name)
            assert (a - b).abs().max() < 1e-5
            assert ma == mb


def test_a_folder_yields_every_file_encode_reads(tmp_path):
    """One list of media suffixes: a .tif that `wanvae encode` reads is a source for the cache too."""
    from PIL import Image

    from wanvae.io import video

    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(media.pattern(0, 32, 32)).save(src / "scan.tif")
    media.write_video(src / "clip.mp4", 5, 32, 32)
    (src / "notes.txt").write_text("not media\n")
    assert video.probe(src / "scan.tif").frames == 1
    assert [s.rel for s in find_sources(src)] == ["clip.mp4", "scan.tif"]


def test_clips_decoded_ahead_are_bounded_by_bytes_not_only_count():
    from wanvae.cache.work import PREFETCH_BYTES, may_queue

    clip = 81 * 3 * 1280 * 720 * 4  # 0.9 GB: a 720p clip of 81 frames in fp32
    assert may_queue([], 10 * PREFETCH_BYTES, most=4)  # one always waits, however big
    assert not may_queue([clip], clip, most=4)  # a second 720p clip would pass the budget
    small = 17 * 3 * 256 * 256 * 4
    assert may_queue([small] * 3, small, most=4) and not may_queue([small] * 4, small, most=4)  # small clips: the count rules
