"""Caching a training set for musubi-tuner: `wanvae cache --format musubi` against diffusers'
`AutoencoderKLWan` (the original Wan code's algorithm, which musubi-tuner's own caching runs)
on the same clips, one run, start-up included.

Full-size Wan 2.1 VAE, random weights (a checkpoint file both sides load), fp32, CPU. Each
side runs as a fresh process timed from outside: model load, reading the clips, encoding,
writing. With `--i2v` each side also encodes each clip's image-to-video conditioning clip
(the first frame, then zeros): diffusers as a second full encode, as musubi-tuner does;
wanvae through `--conditioning i2v` (`encode_conditioning`'s fast path).

    python bench/cache.py                  # 3 clips of 17 frames at 256x256, about 5 minutes on 2 cores
    python bench/cache.py --clips 2 --frames 9

Prints one JSON object with the CPU, each side's seconds, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DIFFUSERS_CHILD = r"""
import sys, torch, wanvae
from wanvae.io import video
from wanvae.testing import reference_for
ckpt, i2v, out, *clips = sys.argv[1:]
torch.set_grad_enabled(False)
ref = reference_for(wanvae.load(ckpt))  # diffusers' AutoencoderKLWan with the checkpoint's weights
results = {}
for path in clips:
    info = video.probe(path)
    plan = video.plan_frames(info)
    x = torch.stack(list(video.read_frames(info, plan, (info.width, info.height))), dim=1)[None]
    latents = ref.encode(x).latent_dist.mode()
    if i2v == "1":
        cond = torch.zeros_like(x)
        cond[:, :, 0] = x[:, :, 0]
        ref.encode(cond).latent_dist.mode()
    results[path] = latents
torch.save(results, out)
"""


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed:\n{r.stderr[-2000:]}")
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=3)
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--size", default="256x256")
    args = p.parse_args()
    w, h = (int(v) for v in args.size.split("x"))

    import torch

    import wanvae
    from wanvae.io import musubi
    from wanvae.testing import randomize

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import media

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        ckpt = wanvae.save(randomize(wanvae.WanVAE(wanvae.preset("wan2.1")), seed=0), d / "wan21_random.safetensors")
        src = d / "clips"
        src.mkdir()
        clips = [media.write_video(src / f"clip_{i}.mp4", args.frames, w, h) for i in range(args.clips)]
        report = {"cpu": _cpu(), "threads": torch.get_num_threads(), "clips": args.clips, "frames": args.frames, "size": args.size}
        for i2v in (False, True):
            tag = "i2v" if i2v else "plain"
            out = d / f"cache-{tag}"
            cmd = [sys.executable, "-m", "wanvae", "cache", str(src), "-o", str(out), "--weights", str(ckpt), "--format", "musubi",
                   "--frames", str(args.frames), "--tile", "none", "--workers", "1", "-q"] + (["--conditioning", "i2v"] if i2v else [])
            ours = _timed(cmd)
            theirs_file = d / f"diffusers-{tag}.pt"
            theirs = _timed([sys.executable, "-c", DIFFUSERS_CHILD, str(ckpt), "1" if i2v else "0", str(theirs_file), *map(str, clips)])
            # Both sides encoded the same frames: their latents agree (bf16 files against fp32 means).
            ref = torch.load(theirs_file, weights_only=True)
            worst = 0.0
            for clip in clips:
                name = musubi.cache_name(clip.stem, (w, h), 0, args.frames)
                tensors, _ = musubi.read_clip(out / name)
                worst = max(worst, float((tensors["latents"].float() - wanvae.load(ckpt, parts="encoder").normalize(ref[str(clip)])[0]).abs().max()))
            report[tag] = {"wanvae_s": round(ours, 1), "diffusers_s": round(theirs, 1), "ratio": round(theirs / ours, 2),
                           "max_abs_diff_bf16_vs_diffusers": round(worst, 4)}
            print(json.dumps({tag: report[tag]}), file=sys.stderr, flush=True)
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
