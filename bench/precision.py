"""Reduced precision, part by part, against float32: how much each part loses in bf16 and fp16.

For each model, the clip is encoded and decoded in float32; then one part at a time runs
reduced (the encoder, its latents decoded by the fp32 decoder; or the decoder, from the
fp32 latents) and is compared with the fp32 result: max abs difference of the latents
and of the decoded frames, and the decoded frames' PSNR against the fp32 ones (and, for
the trained demo model, against the source clip). Random weights are scaled like the
tests' (activations near 1); the demo model is the bundled trained one, on its held-out
photo under a moving camera.

    python bench/precision.py [--frames 9] [--size 128] [--json results/precision.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time

import torch

import wanvae
from wanvae.training.demo import demo_model, held_out_clip
from wanvae.metrics import psnr
from wanvae.testing import randomize

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def models(names: list[str]):
    for name in names:
        if name == "demo":
            yield "demo (trained)", demo_model()
        else:
            yield f"{name} (random)", randomize(wanvae.WanVAE(wanvae.preset(name)), seed=0)


def rows_for(label: str, vae: wanvae.WanVAE, clip: torch.Tensor, dtypes: list[str]):
    z32 = vae.encode(clip)
    y32 = vae.decode(z32)
    base = {"model": label, "frames": clip.shape[2], "size": f"{clip.shape[4]}x{clip.shape[3]}"}
    yield {**base, "part": "none", "dtype": "float32", "latents_max_abs": 0.0, "frames_max_abs": 0.0,
           "psnr_vs_fp32_db": float("inf"), "psnr_vs_source_db": psnr(y32, clip).mean().item()}
    for name in dtypes:
        dtype = DTYPES[name]
        for part in ("encoder", "decoder"):
            reduced = copy.deepcopy(vae).cast(part, dtype)
            t = time.perf_counter()
            if part == "encoder":
                z = reduced.encode(clip).float()
                y = vae.decode(z)
            else:
                z = z32
                y = reduced.decode(z32).float()
            seconds = time.perf_counter() - t
            yield {**base, "part": part, "dtype": name,
                   "latents_max_abs": (z - z32).abs().max().item(), "frames_max_abs": (y - y32).abs().max().item(),
                   "psnr_vs_fp32_db": psnr(y, y32).mean().item(), "psnr_vs_source_db": psnr(y, clip).mean().item(),
                   "finite": bool(torch.isfinite(y).all()), "seconds": round(seconds, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="demo,wan2.1,wan2.2", help="comma-separated: demo and/or preset names")
    p.add_argument("--dtypes", default="bfloat16,float16")
    p.add_argument("--frames", type=int, default=9)
    p.add_argument("--size", type=int, default=128, help="square frames of this side")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args()
    clip = held_out_clip(args.frames, (args.size, args.size)).unsqueeze(0)  # [1, 3, T, H, W]
    rows = []
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| model | part in reduced precision | dtype | latents max abs | frames max abs | PSNR vs fp32 (dB) | PSNR vs source (dB) |")
    print("|---|---|---|---:|---:|---:|---:|")
    for label, vae in models(args.models.split(",")):
        for row in rows_for(label, vae, clip, args.dtypes.split(",")):
            rows.append(row)
            print(f"| {row['model']} | {row['part']} | {row['dtype']} | {row['latents_max_abs']:.3g} | {row['frames_max_abs']:.3g} | "
                  f"{row['psnr_vs_fp32_db']:.1f} | {row['psnr_vs_source_db']:.2f} |", flush=True)
        del vae
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
