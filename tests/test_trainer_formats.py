"""What trainers read: musubi-tuner's Wan cache, the image-to-video conditioning, and
`wanvae.data` over wanvae's own cache folder.

The musubi files are read back by a reader written here from the format's rules alone (the
name split from the right, the key suffixes), as musubi-tuner's trainer reads them, not by
wanvae's own writer module.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import torch

import media
import wanvae
from conftest import TINY, random_vae
from test_cli import WANVAE
from wanvae.cache.index import read_index
from wanvae.cache.plan import CacheOptions
from wanvae.cache.run import run_cache


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two clips with underscores in their names, of two aspect ratios (two buckets), and an image."""
    d = tmp_path_factory.mktemp("formats")
    src = d / "src"
    src.mkdir()
    media.write_video(src / "pan_over_cat.mp4", 13, 64, 48)
    media.write_video(src / "tall_shot_2.mp4", 9, 48, 64)
    media.write_image(src / "still_life.png", 48, 32)
    manifest = d / "rows.jsonl"
    rows = [{"path": "src/pan_over_cat.mp4", "caption": "a pan"}, {"path": "src/tall_shot_2.mp4", "caption": "a tall shot"},
            {"path": "src/still_life.png", "frames": 1, "caption": "a still"}]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    vae = random_vae(TINY, seed=90)
    return {"dir": d, "src": src, "manifest": manifest, "ckpt": wanvae.save(vae, d / "tiny.safetensors"), "vae": vae}


BUCKETS = ((64, 48), (48, 64))
NAME = re.compile(r"^(?P<key>.+?)(?:_(?P<pos>\d{5})-(?P<frames>\d{3}))?_(?P<w>\d{4})x(?P<h>\d{4})_wan\.safetensors$")
KEY = re.compile(r"^(?P<kind>latents(?:_image)?)_(?P<f>\d+)x(?P<h>\d+)x(?P<w>\d+)_(?P<dtype>bfloat16|float16|float32)$")


def read_like_musubi(folder):
    """{item_key: (name fields, {kind: tensor}, metadata)} for every `*_wan.safetensors`, read by the rules."""
    from safetensors import safe_open

    found = {}
    for path in sorted(folder.glob("*_wan.safetensors")):
        tokens = path.name.split("_")
        w, h = (int(v) for v in tokens[-2].split("x"))
        m = NAME.match(path.name)
        assert m is not None, path.name
        video = m["frames"] is not None
        key = "_".join(tokens[:-3] if video else tokens[:-2])  # what its text-encoder cache is named after
        assert key == m["key"]
        tensors = {}
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            for k in f.keys():
                km = KEY.match(k)
                assert km is not None, k
                t = f.get_tensor(k)
                assert list(t.shape[1:]) == [int(km["f"]), int(km["h"]), int(km["w"])]
                assert str(t.dtype) == f"torch.{km['dtype']}"
                tensors[km["kind"]] = t
        fields = {"size": (w, h), "pos": int(m["pos"]) if video else None, "frames": int(m["frames"]) if video else None}
        found[key] = (fields, tensors, meta)
    return found


def test_musubi_files_are_what_musubi_reads_and_hold_encode_s_latents(world, tmp_path):
    out = tmp_path / "musubi"
    r = subprocess.run([WANVAE, "cache", str(world["manifest"]), "-o", str(out), "--weights", str(world["ckpt"]), "--format", "musubi",
                        "--buckets", "64x48,48x64", "--frames", "9", "--tile", "none", "--workers", "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    videos, images = read_like_musubi(out / "videos"), read_like_musubi(out / "images")
    assert set(videos) == {"pan_over_cat", "tall_shot_2"} and set(images) == {"still_life"}  # underscores kept
    fields, tensors, meta = videos["pan_over_cat"]
    assert fields == {"size": (64, 48), "pos": 0, "frames": 9}  # the source's size, the clip's first frame and count
    assert meta["architecture"] == "wan" and meta["format_version"] == "1.0.1"
    assert (meta["width"], meta["height"], meta["frame_count"]) == ("64", "48", "9")
    assert set(tensors) == {"latents"} and tensors["latents"].dtype == torch.bfloat16  # musubi's default
    fields, tensors, meta = images["still_life"]
    assert fields == {"size": (48, 32), "pos": None, "frames": None} and "frame_count" not in meta
    assert tensors["latents"].shape == (16, 1, 6, 8)  # at the bucket nearest its 3:2: 64x48
    # Two buckets: each clip at the bucket nearest its aspect ratio.
    assert videos["tall_shot_2"][1]["latents"].shape == (16, 3, 8, 6)
    # The latents are `wanvae encode`'s for the same frames, to bf16 rounding (exactly, in fp32).
    fp32 = tmp_path / "fp32"
    run_cache(world["manifest"], fp32, world["ckpt"], CacheOptions(frames=9, buckets=BUCKETS, format="musubi", latent_dtype="float32"),
              workers=1, tile=None)
    exact = read_like_musubi(fp32 / "videos")["pan_over_cat"][1]["latents"]
    ref, _ = wanvae.encode_file(world["src"] / "pan_over_cat.mp4", world["vae"], frames=9, size=(64, 48))
    assert torch.equal(exact, ref[0])
    assert torch.equal(videos["pan_over_cat"][1]["latents"], ref[0].to(torch.bfloat16))


def test_image_to_video_conditioning_is_encode_conditioning_with_wan_s_mask(world, tmp_path):
    vae = world["vae"]
    for conditioning, last in (("i2v", False), ("flf", True)):
        out = tmp_path / conditioning
        summary = run_cache(world["manifest"], out, world["ckpt"], CacheOptions(frames=9, buckets=BUCKETS, format="musubi",
                            latent_dtype="float32", conditioning=conditioning), workers=1, tile=None)
        assert summary.done == 3 and not summary.failed
        image = read_like_musubi(out / "videos")["pan_over_cat"][1]["latents_image"]
        assert image.shape == (20, 3, 6, 8)
        clip = _frames_as_cached(world, "pan_over_cat.mp4")
        ref = vae.encode_conditioning(clip[:, :, 0], clip[:, :, -1] if last else None, num_frames=9)[0]
        assert torch.equal(image[4:], ref)
        # Wan's mask: 1 in all four channels where the first frame is; for FLF the last pixel
        # frame is the last of the four frames folded into the last latent frame.
        mask = image[:4, :, 0, 0]
        expected = torch.tensor([[1.0, 0, 0]] * 4)
        if last:
            expected[3, 2] = 1.0
        assert torch.equal(mask, expected) and torch.equal(image[:4].amin(dim=(2, 3)), image[:4].amax(dim=(2, 3)))
        # The conditioning clip is the clip's first frame then zeros: a plain encode of it agrees.
        zeros = torch.zeros_like(clip)
        zeros[:, :, 0] = clip[:, :, 0]
        if last:
            zeros[:, :, -1] = clip[:, :, -1]
        torch.testing.assert_close(image[4:], vae.encode(zeros)[0], atol=1e-5, rtol=0)
    # wanvae's own format: the same tensors under their names, beside `latents`.
    own = tmp_path / "own"
    run_cache(world["manifest"], own, world["ckpt"], CacheOptions(frames=9, buckets=BUCKETS, conditioning="i2v"), workers=1, tile=None)
    item = next(x for x in wanvae.data.LatentDataset(own) if x["caption"] == "a pan")
    i2v = read_like_musubi(tmp_path / "i2v" / "videos")["pan_over_cat"][1]["latents_image"]
    assert torch.equal(item["conditioning"], i2v[4:]) and torch.equal(item["conditioning_mask"], i2v[:4])
    assert item["metadata"]["conditioning"] == "i2v"


def _frames_as_cached(world, name):
    """The clip's frames as the cache reads them: [1, 3, T, H, W]."""
    from wanvae.cache.plan import Source, plan_source
    from wanvae.cache.work import load_clip

    job = plan_source(Source(str(world["src"] / name), name), CacheOptions(frames=9, buckets=BUCKETS))[0]
    _, frames, _, error = load_clip(job, "crop")
    assert frames is not None, error
    return frames[None]


def test_wan22_ti2v_needs_no_conditioning_tensor_its_first_latent_frame_is_the_image():
    """By causality the clip's first latent frame is its first frame encoded alone: TI2V's conditioning."""
    from conftest import random_video

    vae22 = random_vae(wanvae.preset("tiny-2.2"), seed=93)
    clip = random_video(1, 9, 32, 48, seed=91)
    assert torch.equal(vae22.encode(clip)[:, :, :1], vae22.encode(clip[:, :, :1]))


def test_formats_a_trainer_cannot_read_are_refused_in_one_line(world, tmp_path):
    vae22 = random_vae(wanvae.preset("tiny-2.2"), seed=92)
    ckpt22 = wanvae.save(vae22, tmp_path / "tiny22.safetensors")
    for extra, needle in ((["--format", "musubi"], "musubi-tuner's Wan cache holds the Wan 2.1 VAE's 16 latent channels"),
                          (["--conditioning", "i2v"], "TI2V-5B needs no conditioning tensor")):
        r = subprocess.run([WANVAE, "cache", str(world["src"]), "-o", str(tmp_path / "c"), "--weights", str(ckpt22), *extra],
                           capture_output=True, text=True)
        assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / "c").exists()  # refused before any work


def test_musubi_names_that_would_collide_fail_the_later_source_by_name(world, tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    media.write_video(src / "a" / "take.mp4", 5, 64, 48)
    media.write_video(src / "b" / "take.mp4", 5, 64, 48)
    out = tmp_path / "out"
    summary = run_cache(src, out, world["ckpt"], CacheOptions(frames=5, format="musubi"), workers=1, tile=None)
    assert summary.done == 1 and len(summary.failed) == 1
    what, why = summary.failed[0]
    assert what == "b/take.mp4" and "a/take.mp4" in why and "file name alone" in why
    # A rerun skips the written clip (its contents, not its existence, are checked) and fails the same source again.
    again = run_cache(src, out, world["ckpt"], CacheOptions(frames=5, format="musubi"), workers=1, tile=None)
    assert (again.done, again.skipped, len(again.failed)) == (0, 1, 1)


# ---- wanvae.data --------------------------------------------------------------------------------
def test_latent_dataset_reads_items_and_the_sampler_batches_one_shape(world, tmp_path):
    from torch.utils.data import DataLoader

    out = tmp_path / "own"
    # The world's three items, and two 5-frame clips of one video: a bucket that holds two.
    manifest = tmp_path / "rows.jsonl"
    more = "".join(json.dumps({"path": str(world["src"] / "pan_over_cat.mp4"), "start": s, "frames": 5}) + "\n" for s in (0, 0.25))
    manifest.write_text(world["manifest"].read_text().replace('"src/', f'"{world["src"]}/') + more)
    run_cache(manifest, out, world["ckpt"], CacheOptions(frames=9, buckets=BUCKETS), workers=1, tile=None)
    data = wanvae.data.LatentDataset(out)
    rows = [r for r in read_index(out) if r["status"] == "ok"]
    assert len(data) == len(rows) == 5
    item = data[0]
    assert set(item) == {"latents", "caption", "metadata", "path"} and item["latents"].dim() == 4
    assert item["metadata"]["cache_key"] and item["path"].endswith(".safetensors")
    sampler = wanvae.data.BucketBatchSampler(data, batch_size=2, seed=3)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(5))
    for batch in batches:
        assert len({data.shape(i) for i in batch}) == 1
    assert batches == list(wanvae.data.BucketBatchSampler(data, batch_size=2, seed=3))  # the same with the same seed
    loader = DataLoader(data, batch_sampler=sampler, collate_fn=wanvae.data.collate)
    for batch in loader:
        assert batch["latents"].dim() == 5 and len(batch["caption"]) == batch["latents"].shape[0]


def test_latent_dataset_names_bad_and_stale_files_never_skips_them(world, tmp_path):
    out = tmp_path / "own"
    run_cache(world["manifest"], out, world["ckpt"], CacheOptions(frames=9, buckets=BUCKETS), workers=1, tile=None)
    rows = [r for r in read_index(out) if r["status"] == "ok"]
    missing, stale, cut = (out / r["output"] for r in rows)
    missing.unlink()
    wanvae.save_latents(stale, torch.zeros(16, 1, 2, 2))
    cut.write_bytes(cut.read_bytes()[:100])
    with pytest.raises(wanvae.data.CacheError) as e:
        wanvae.data.LatentDataset(out)
    message = str(e.value)
    assert "3 of 3" in message and f"{missing} (missing)" in message and f"{cut} (unreadable" in message
    assert f"{stale} (latents [16, 1, 2, 2]" in message and "stale" in message
    lazy = wanvae.data.LatentDataset(out, check=False)
    with pytest.raises(wanvae.data.CacheError, match="stale"):
        lazy[[r["output"] for r in rows].index(rows[1]["output"])]
    run_cache(world["manifest"], tmp_path / "m", world["ckpt"], CacheOptions(frames=9, format="musubi"), workers=1, tile=None)
    with pytest.raises(wanvae.data.CacheError, match="musubi"):
        wanvae.data.LatentDataset(tmp_path / "m")
