"""`wanvae encode`, `decode` and `roundtrip`: files in, files out, through `io.files`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..io import values
from .common import EXIT_OK, UsageError, check_output, encode_options, load_model, progress_bar, resolve_weights, say

ROUNDTRIP_OUTPUTS = ("metrics.json", "side_by_side.mp4", "reconstruction.mp4", "frames.png")


def add_parsers(sub, common, model, frames) -> None:
    p = sub.add_parser("encode", parents=[common, model, frames], help="video or image -> latents file", description="Encode a video (mp4, mkv, webm, mov, gif, ...) or an image (png, jpg, webp) into normalised Wan latents [16, t, h, w].")
    p.add_argument("input", help="video or image file")
    p.add_argument("-o", "--out", help="latents file, .safetensors (default) or .pt")
    p.add_argument("--format", choices=("safetensors", "pt"), help="output format (default: by the -o suffix)")
    p.add_argument("--sample", action="store_true", help="a sample from the posterior instead of its mean")
    p.add_argument("--seed", type=values.seed, help="seed for --sample (default 0)")
    p.set_defaults(run=encode)

    p = sub.add_parser("decode", parents=[common, model], help="latents file -> mp4 (or png)", description="Decode a latents file into an H.264 mp4, or a PNG for a single latent frame.")
    p.add_argument("latents", help="latents file from `wanvae encode`")
    p.add_argument("-o", "--out", help="output .mp4 (or .png for one frame)")
    p.add_argument("--fps", type=values.frame_rate, help="frame rate (default: the one recorded at encode time, else the family's: 16 for Wan 2.1, 24 for Wan 2.2)")
    p.add_argument("--skip-upscale", action="append", choices=("time", "space"), default=[],
                   help="TAEHV previews only, cheaper: 'time' makes one frame per latent (a quarter of the frames), "
                        "'space' skips the last 2x up-sampling (frames at half the size); repeatable")
    p.set_defaults(run=decode)

    p = sub.add_parser("roundtrip", parents=[common, model, frames], help="encode + decode, report PSNR/SSIM", description="Encode and decode a file; report PSNR and SSIM per frame and overall; write a side-by-side video and a PNG strip.")
    p.add_argument("input", help="video or image file")
    p.add_argument("-o", "--out", help="output folder (default wanvae-roundtrip/)")
    p.set_defaults(run=roundtrip)


def encode(args) -> int:
    from ..io.files import encode_file, plan_encode
    from ..io.latents import save_latents
    from ..io.video import probe
    from ..io.weights import file_sha256

    out = Path(args.out) if args.out else Path(Path(args.input).stem + (".pt" if args.format == "pt" else ".safetensors"))
    if args.format:
        out = out.with_suffix(".pt" if args.format == "pt" else ".safetensors")
    if out.suffix not in (".safetensors", ".pt"):
        raise UsageError(f"{out}: latents are written as .safetensors or .pt (or pass --format)")
    check_output(out, args.overwrite, inputs=(args.input, resolve_weights(args)))
    refuse_latents(args.input)
    info = probe(args.input)  # a missing, corrupt or stream-less file fails before weights load
    vae, weights = load_model(args, parts="encoder")
    info, plan, size = plan_encode(args.input, vae, info=info, **encode_options(args))
    started = time.perf_counter()
    bar = progress_bar(args, plan.count, "frame", Path(args.input).name)

    def progress(frames: int, latents: int) -> None:
        bar.n = frames
        bar.set_postfix_str(f"{latents} latent frames")

    latents, meta = encode_file(
        args.input,
        vae,
        **encode_options(args),
        tile=args.tile,
        sample=args.sample,
        seed=args.seed,
        checkpoint_sha256=file_sha256(weights),
        progress=progress,
    )
    bar.close()
    save_latents(out, latents, meta, overwrite=args.overwrite)
    took = time.perf_counter() - started
    say(args, f"{out}: latents {list(latents.shape[1:])} from {values.plural(plan.count, 'frame')} at {size[0]}x{size[1]} in {took:.1f}s")
    return EXIT_OK


def decode(args) -> int:
    from ..checks import latent_channels_error
    from ..io.files import decode_fps, decode_latents_to_file
    from ..io.latents import load_latents, metadata_warnings
    from ..io.weights import file_sha256

    latents, meta = load_latents(args.latents)
    out = Path(args.out) if args.out else Path(Path(args.latents).stem + (".png" if latents.shape[2] == 1 else ".mp4"))
    check_output(out, args.overwrite, inputs=(args.latents, resolve_weights(args)))
    vae, _ = load_model(args, parts="decoder")
    if latents.shape[1] != vae.config.z_dim:
        raise UsageError(f"{args.latents}: {latent_channels_error(latents.shape[1], vae.config)}")
    if args.skip_upscale:
        if not hasattr(vae, "preview"):
            raise UsageError("--skip-upscale: only the TAEHV tiny autoencoders have preview modes; this is a Wan VAE")
        vae = vae.preview(time="time" not in args.skip_upscale, space="space" not in args.skip_upscale)
    sha = file_sha256(resolve_weights(args)) if meta.get("checkpoint_sha256") else None
    notes = metadata_warnings(meta, tuple(latents.shape), vae.config.spatial_ratio, vae.config.temporal_ratio, sha)
    for note in notes:
        print(f"wanvae decode: warning: {args.latents}: {note}", file=sys.stderr)
    fps = args.fps or decode_fps(meta, vae.config, notes)
    frames = vae.config.pixel_frames(latents.shape[2])
    bar = progress_bar(args, frames, "frame", out.name)
    started = time.perf_counter()

    def progress(done: int, latent: int) -> None:
        bar.n = done
        bar.refresh()

    decode_latents_to_file(latents, vae, out, fps=fps, tile=args.tile, overwrite=args.overwrite, progress=progress)
    bar.close()
    h, w = latents.shape[3] * vae.config.decoded_spatial_ratio, latents.shape[4] * vae.config.decoded_spatial_ratio
    rate = f", {fps:g} fps" if frames > 1 else ""  # a PNG has no frame rate
    say(args, f"{out}: {values.plural(frames, 'frame')} at {w}x{h}{rate} in {time.perf_counter() - started:.1f}s")
    return EXIT_OK


def roundtrip(args) -> int:
    import torch

    from ..io import video
    from ..io.atomic import staged_files
    from ..io.files import alpha_for, encode_file, plan_encode, write_comparison

    out_dir = Path(args.out or "wanvae-roundtrip")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir}: exists and is not a folder")
    # That an output is an input is the news, even where another output also exists.
    for overwrite in (True, args.overwrite):
        for name in ROUNDTRIP_OUTPUTS:
            check_output(out_dir / name, overwrite, inputs=(args.input, resolve_weights(args)))
    refuse_latents(args.input)
    info = video.probe(args.input)
    vae, weights = load_model(args)
    if vae.config.decoded_spatial_ratio != vae.config.spatial_ratio:
        raise UsageError(
            f"{weights}: its decoder makes frames {vae.config.decoded_spatial_ratio // vae.config.spatial_ratio}x the size it encodes, "
            "so there is no like-for-like comparison; run `wanvae encode` then `wanvae decode`"
        )
    info, plan, size = plan_encode(args.input, vae, info=info, **encode_options(args))
    started = time.perf_counter()
    latents, meta = encode_file(args.input, vae, **encode_options(args), tile=args.tile)
    recon = vae.decode(latents.to(vae.device, vae.dtype), tile=args.tile)[0].float().cpu()  # [C, T, H, W]
    mode = video.frame_mode(args.resize, args.size, args.max_area)
    original = torch.stack(list(video.read_frames(info, plan, size, mode, alpha_for(vae, args.alpha))), dim=1)
    took = time.perf_counter() - started
    with staged_files(out_dir) as stage:  # all four files, or none of them
        report = write_comparison(stage, original, recon, plan.fps)
        report.update(latent_shape=list(latents.shape[1:]), seconds=round(took, 2), source=str(args.input))
        (stage / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    if not args.quiet:
        for i, (p, s) in enumerate(zip(report["psnr_per_frame"], report["ssim_per_frame"])):
            print(f"frame {i:4d}  PSNR {p:6.2f} dB  SSIM {s:.4f}")
    say(args, f"{out_dir}: PSNR {report['psnr']:.2f} dB, SSIM {report['ssim']:.4f} over {original.shape[1]} frames, latents {report['latent_shape']}, {took:.1f}s")
    return EXIT_OK


def refuse_latents(path: str) -> None:
    """A latents file given where a video or image belongs: say what it is and what to run."""
    from ..io.files import holds_latents

    if holds_latents(path):
        raise UsageError(f"{path}: is a latents file, not a video or image: decode it with `wanvae decode {path}`")
