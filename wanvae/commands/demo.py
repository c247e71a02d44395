"""`wanvae demo`: the whole job on real content, with no arguments and no network."""

from __future__ import annotations

import json
import time
from pathlib import Path

MARKER = ".wanvae-demo"


def add_parser(sub, common, model, frames) -> None:
    from ..io.values import frame_count, size

    p = sub.add_parser(
        "demo",
        parents=[common],
        help="encode and decode a short clip and show the result (no network, no weights needed)",
        description="Make a short clip (held-out content, or INPUT), encode it, decode it, and write a side-by-side "
        "video and a PNG strip (original / reconstruction / difference). Uses the bundled demo model unless --weights "
        "is given; the demo model's latents are not Wan's latents.",
    )
    p.add_argument("input", nargs="?", help="your own video or image (default: a held-out photo with camera motion)")
    p.add_argument("-o", "--out", default="wanvae-demo", help="output folder (default wanvae-demo/, replaced on each run)")
    p.add_argument("--weights", metavar="CKPT", help="a real checkpoint instead of the demo model")
    p.add_argument("--frames", type=frame_count, default=17, help="clip length, 1 + 4k (default 17)")
    p.add_argument("--size", type=size, default=(256, 256), help="clip size WxH (default 256x256)")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    p.set_defaults(run=run)


def run(args) -> int:
    import torch

    from ..io import video
    from ..io.atomic import atomic_dir
    from ..io.files import write_comparison
    from ..io.weights import load
    from ..training import demo
    from .common import UsageError, chosen_device, say

    out = Path(args.out)
    if out.exists() and not (out / MARKER).exists() and not args.overwrite:
        raise UsageError(f"{out}: exists and is not an earlier demo output (pass --overwrite to replace it)")
    for given in (args.input, args.weights):
        if given and Path(given).resolve().is_relative_to(out.resolve()):
            raise UsageError(f"{given}: is inside the output folder {out}, which the demo replaces; move it or pick another -o")
    size = args.size
    device = chosen_device(args)
    if args.weights:
        vae, which = load(args.weights, device=device), Path(args.weights).name
    else:
        vae, which = demo.demo_model(device=device), "the bundled demo model (its latents are not Wan latents)"
    if args.input:
        info = video.probe(args.input)
        plan = video.plan_frames(info, frames=min(args.frames, info.frames), frame_policy="trim")
        clip = torch.stack(list(video.read_frames(info, plan, size)), dim=1)
        source, fps = Path(args.input).name, plan.fps
    else:
        clip = demo.held_out_clip(args.frames, size)
        source, fps = "chelsea.jpg (held out from training) with a moving camera", 16.0
    x = clip[None].to(device)
    started = time.perf_counter()
    latents = vae.encode(x)
    encoded = time.perf_counter()
    recon = vae.decode(latents)[0].float().cpu()
    decoded = time.perf_counter()
    with atomic_dir(out) as tmp:
        report = write_comparison(tmp, clip, recon, fps)
        report.update(source=source, model=which, latent_shape=list(latents.shape[1:]),
                      encode_seconds=round(encoded - started, 3), decode_seconds=round(decoded - encoded, 3))
        (tmp / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
        (tmp / MARKER).write_text("written by `wanvae demo`; the next run replaces this folder\n")
    say(args, f"model:   {which}")
    say(args, f"clip:    {source}, {clip.shape[1]} frames at {size[0]}x{size[1]}")
    say(args, f"latents: {list(latents.shape[1:])}  ({clip.numel() // latents[0].numel()}x fewer numbers)")
    say(args, f"quality: PSNR {report['psnr']:.2f} dB, SSIM {report['ssim']:.4f}")
    say(args, f"time:    encode {encoded - started:.2f}s, decode {decoded - encoded:.2f}s on {device}")
    say(args, f"wrote:   {out}/side_by_side.mp4 and {out}/frames.png (original | reconstruction | difference), {out}/reconstruction.mp4, {out}/metrics.json")
    return 0
