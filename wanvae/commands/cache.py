"""`wanvae cache`: precompute latents for a whole training set."""

from __future__ import annotations

import sys
from pathlib import Path


def _sizes(text: str) -> tuple[tuple[int, int], ...]:
    from ..io.values import size as parse_size

    return tuple(parse_size(part) for part in text.split(",") if part)


def add_parser(sub, common, model, frames) -> None:
    from ..io.values import MAX_FRAMES, frame_count, frame_rate, int_in
    from ..io.values import size as parse_size

    p = sub.add_parser(
        "cache",
        parents=[common, model],
        help="precompute latents for a folder or manifest of videos (resumable, local or Ray)",
        description="Encode every clip of a dataset into DIR: one .safetensors per clip (the same tensor and "
        "metadata as `wanvae encode`) and index.jsonl. Reruns skip finished clips and redo partial or stale ones; "
        "a killed run loses nothing. Exit 0 when every clip is done, 3 when some inputs failed.",
    )
    p.add_argument("source", help="a folder (searched recursively) or a manifest (.csv or .jsonl with a 'path' column; optional start, frames, fps, size, caption)")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--frames", type=frame_count, default=81, help="frames per clip, 1 + 4k (default 81)")
    p.add_argument("--mode", choices=("head", "uniform", "slide", "full"), default="head", help="head: the first clip; uniform: --clips K spread over the video; slide: every --stride S frames; full: the longest 1 + 4k prefix")
    p.add_argument("--clips", type=int_in(1, 10_000, "a clip count"), default=1, help="clips per video for --mode uniform")
    p.add_argument("--stride", type=int_in(1, MAX_FRAMES, "a stride in frames"), help="frames between clip starts for --mode slide")
    p.add_argument("--fps", type=frame_rate, help="resample time to F frames per second first")
    p.add_argument("--size", type=parse_size, metavar="WxH", help="every clip at this size (cover-resize, centre-crop)")
    p.add_argument("--buckets", type=_sizes, metavar="WxH,WxH,...", help="each clip to the bucket nearest its aspect ratio")
    p.add_argument("--alpha", choices=("refuse", "black", "white"), default="refuse", help="clips with transparent pixels: fail them (default), or composite them on black or white")
    p.add_argument("--format", choices=("wanvae", "musubi"), default="wanvae", help="wanvae: one .safetensors per clip as `wanvae encode` writes (default); musubi: the files musubi-tuner's Wan trainer reads unchanged (videos/ and images/ folders)")
    p.add_argument("--conditioning", choices=("i2v", "flf"), help="also cache image-to-video conditioning: i2v the first frame, flf the first and last (Wan's FLF2V), with Wan's mask")
    p.add_argument("--latent-dtype", choices=("bf16", "fp16", "fp32"), help="what the files hold (default: fp32 for --format wanvae, bf16 for musubi, as musubi-tuner caches)")
    p.add_argument("--workers", type=int_in(1, 64, "a worker count"), default=2, help="decoding workers running ahead of the encoder (default 2)")
    p.add_argument("--engine", choices=("local", "ray"), default="local", help="local processes, or a Ray cluster (pip install 'wanvae[ray]')")
    p.add_argument("--ray-address", help="Ray cluster to join (default: $RAY_ADDRESS, else a local instance)")
    p.set_defaults(run=run)


def run(args) -> int:
    import torch

    from ..cache.plan import CacheOptions
    from ..cache.run import run_cache
    from .common import DTYPES, EXIT_OK, EXIT_PARTIAL, UsageError, check_output, check_tile, chosen_device, progress_bar, resolve_weights

    weights = resolve_weights(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    # The index is rewritten on every run; a manifest of that name in that folder would be lost.
    check_output(out / "index.jsonl", overwrite=True, inputs=(args.source, weights))
    from ..io.weights import peek_config

    config = peek_config(weights)
    check_tile(args.tile, config)
    alpha = args.alpha
    if config.image_channels == 4:  # an RGBA model keeps alpha: compositing it away is refused
        if alpha != "refuse":
            raise UsageError(f"--alpha {alpha}: this RGBA model encodes alpha as it is; --alpha is for RGB models")
        alpha = "keep"
    opts = CacheOptions(
        frames=None if args.mode == "full" else args.frames,
        mode=args.mode, clips=args.clips, stride=args.stride, fps=args.fps, size=args.size, buckets=args.buckets or (), alpha=alpha,
        format=args.format, conditioning=args.conditioning,
        latent_dtype={"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(args.latent_dtype),
        multiple=config.spatial_ratio,
    )
    bar = progress_bar(args, 0, "clip", out.name)

    def progress(s) -> None:
        bar.total = s.total
        bar.n = s.done + s.skipped + len(s.failed)
        bar.set_postfix_str(f"{len(s.failed)} failed, {s.skipped} already done")

    summary = run_cache(
        args.source, out, weights, opts, engine=args.engine, workers=args.workers, tile=args.tile, device=chosen_device(args),
        dtype=getattr(torch, DTYPES[args.encoder_dtype or args.dtype]), progress=progress, ray_address=args.ray_address,
        compile=args.compile,
    )
    bar.close()
    if not args.quiet:
        print(f"{out}: {summary.done} clips encoded, {summary.skipped} already done, {len(summary.failed)} failed; "
              f"{summary.seconds:.1f}s ({summary.clips_per_hour:.0f} clips/hour)")
    for what, why in summary.failed:
        print(f"wanvae cache: failed: {what}: {why}", file=sys.stderr)
    if summary.failed:
        return EXIT_PARTIAL
    return EXIT_OK
