"""Peak memory of the real `wanvae encode` / `wanvae decode` commands with a full-size Wan 2.2
checkpoint (random weights), once as the released `.pth` and once as a diffusers folder, beside
diffusers' AutoencoderKLWan untiled and tiled on the same input.

Every measurement is a fresh process; its peak RSS is what /usr/bin/time reports (%M). The
checkpoints (2.8 GB each) and media are written to a scratch folder, never to the repository.

    python bench/memory22.py /tmp/wan22-mem            # the issue's cases (an hour or more on 2 cores)
    python bench/memory22.py /tmp/wan22-mem --latents 2  # decode 2 latent frames instead of 5
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

WIDTH, HEIGHT, FRAMES = 1280, 704, 17


def prepare(folder: Path, latent_frames: int) -> dict[str, Path]:
    import av
    import numpy as np

    import wanvae
    from wanvae.testing import randomize

    folder.mkdir(parents=True, exist_ok=True)
    paths = {"pth": folder / "Wan2.2_VAE.pth", "diffusers": folder / "Wan2.2_VAE-diffusers", "video": folder / "clip.mp4",
             "latents": folder / f"latents{latent_frames}.safetensors"}
    if not paths["pth"].exists() or not paths["diffusers"].exists():
        vae = randomize(wanvae.WanVAE(wanvae.preset("wan2.2")), seed=0)
        torch.save(vae.state_dict(), paths["pth"])  # the released layout: a plain state dict
        wanvae.save(vae, paths["diffusers"], format="diffusers")
        del vae
    if not paths["video"].exists():
        container = av.open(str(paths["video"]), "w")
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
        for i in range(FRAMES):
            img = np.stack([128 + 100 * np.sin(xx / 29 + i * 0.3), 128 + 100 * np.cos(yy / 23 - i * 0.2),
                            128 + 80 * np.sin((xx + yy) / 41)], -1).clip(0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        container.close()
    if not paths["latents"].exists():
        z = torch.randn(1, 48, latent_frames, HEIGHT // 16, WIDTH // 16, generator=torch.Generator().manual_seed(0))
        wanvae.save_latents(paths["latents"], z, {"fps": "24"})
    return paths


def measure(cmd: list[str]) -> tuple[float, float, str]:
    """(peak RSS in GB, seconds, last stderr line) of `cmd` run under /usr/bin/time."""
    started = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    lines = out.stderr.strip().splitlines()
    peak_kb = int(lines[-1]) if lines and lines[-1].isdigit() else 0
    problem = "" if out.returncode == 0 else (lines[-2] if len(lines) > 1 else "failed")
    return peak_kb / 2**20, seconds, problem


def diffusers_child(kind: str, weights: str, data: str, tiled: bool) -> None:
    """One diffusers run (called in a fresh process by `measure`)."""
    from diffusers import AutoencoderKLWan

    import wanvae
    from wanvae.io import video

    ref = AutoencoderKLWan.from_pretrained(weights).eval()
    if tiled:
        ref.enable_tiling()  # its defaults: 256-px tiles, 192-px stride, blended
    with torch.no_grad():
        if kind == "encode":
            info = video.probe(data)
            plan = video.plan_frames(info)
            x = torch.stack(list(video.read_frames(info, plan, (info.width, info.height))), dim=1)[None]
            ref.encode(x)
        else:
            z, _ = wanvae.load_latents(data)
            ref.decode(z)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="scratch folder for the checkpoints, media and outputs")
    p.add_argument("--latents", type=int, default=5, help="latent frames to decode (default 5: 17 frames)")
    p.add_argument("--cases", default="ours,diffusers", help="ours, diffusers or both")
    p.add_argument("--diffusers-kinds", default="encode,decode", help="which of diffusers' runs (its decode is slow)")
    p.add_argument("--diffusers-child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.diffusers_child:
        kind, weights, data, tiled = args.diffusers_child
        return diffusers_child(kind, weights, data, tiled == "tiled")
    paths = prepare(args.folder, args.latents)
    wanvae_cmd = shutil.which("wanvae")
    rows = []
    for fmt in ("pth", "diffusers"):
        if "ours" not in args.cases:
            break
        for kind, data, out in (("encode", paths["video"], args.folder / "out.safetensors"),
                                ("decode", paths["latents"], args.folder / "out.mp4")):
            cmd = [wanvae_cmd, kind, str(data), "-o", str(out), "--weights", str(paths[fmt]), "--tile", "256", "--overwrite", "-q"]
            peak, seconds, problem = measure(cmd)
            rows.append({"impl": f"wanvae {kind} --tile 256", "weights": fmt, "peak_gb": round(peak, 2), "seconds": round(seconds), "problem": problem})
            print(json.dumps(rows[-1]), flush=True)
    for kind, data in (("encode", paths["video"]), ("decode", paths["latents"])):
        if "diffusers" not in args.cases or kind not in args.diffusers_kinds:
            continue
        for tiled in ("untiled", "tiled"):
            cmd = [sys.executable, __file__, str(args.folder), "--diffusers-child", kind, str(paths["diffusers"]), str(data), tiled]
            peak, seconds, problem = measure(cmd)
            rows.append({"impl": f"diffusers {kind} {tiled}", "weights": "diffusers", "peak_gb": round(peak, 2), "seconds": round(seconds), "problem": problem})
            print(json.dumps(rows[-1]), flush=True)
    what = f"encode: {FRAMES} frames at {WIDTH}x{HEIGHT}; decode: {args.latents} latent frames to {WIDTH}x{HEIGHT}"
    print(f"\n{what}\n\n| run | weights | peak RSS | seconds |\n| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['impl']} | {r['weights']} | {r['peak_gb']:.2f} GB | {r['seconds']} {r['problem']} |")


if __name__ == "__main__":
    main()
