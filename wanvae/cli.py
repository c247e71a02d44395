"""The `wanvae` command: a thin layer over the library.

Exit status: 0 success, 2 bad usage or bad input, 3 a batch finished with some items
failed, 1 anything else. Each error is one line on stderr; a traceback only with --debug.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from . import argtypes

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16"}


class UsageError(Exception):
    """Bad usage or bad input: exit status 2."""


# ---- argument types (checked at parse time, before torch is imported: see argtypes) ------------
parse_size = argtypes.size
parse_tile = argtypes.tile


class Parser(argparse.ArgumentParser):
    """argparse with the house's error format: one line, exit status 2 (argparse's own
    prints the whole usage first)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---- shared helpers -------------------------------------------------------------------------
def resolve_weights(args) -> str:
    path = args.weights or os.environ.get("WANVAE_WEIGHTS")
    if not path:
        raise UsageError("no checkpoint: pass --weights CKPT or set WANVAE_WEIGHTS (wanvae never picks weights on its own)")
    return path


def chosen_device(args) -> str:
    """`--device` as given (checked to exist here), else the GPU when there is one: every
    command picks the same way."""
    import torch

    if not args.device:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(args.device)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {args.device}: not a device name; valid: cpu, cuda, cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"--device {args.device}: this machine has no CUDA device (use --device cpu)")
        if device.index is not None and device.index >= count:
            raise UsageError(f"--device {args.device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise UsageError(f"--device {args.device}: MPS is not available here (use --device cpu)")
    elif device.type != "cpu":
        raise UsageError(f"--device {args.device}: wanvae runs on cpu, cuda or mps")
    return args.device


def load_model(args, parts: str = "all"):
    import torch

    import wanvae

    path = resolve_weights(args)
    def dtype_of(name: str | None):
        return None if name is None else getattr(torch, DTYPES[name])

    device = chosen_device(args)
    vae = wanvae.load(
        path, device=device, dtype=dtype_of(args.dtype), parts=parts,
        encoder_dtype=dtype_of(args.encoder_dtype), decoder_dtype=dtype_of(args.decoder_dtype),
    )
    if args.compile:
        vae.compile()
    return vae, path


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file or folder (links and relative spellings included)."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_output(path: Path, overwrite: bool, inputs: tuple = ()) -> None:
    """Refuse an output we could not write, or must not, before any work is done: one
    that exists (without --overwrite) or that is one of the command's inputs (ever)."""
    path = Path(path)
    for source in inputs:
        if source is not None and same_file(path, source):
            raise UsageError(f"{path}: is also an input of this command; write the output somewhere else")
    if path.exists() and not overwrite:
        raise UsageError(f"{path}: already exists (pass --overwrite to replace it)")
    if path.exists() and path.is_dir() and path.suffix:
        raise UsageError(f"{path}: is a folder")
    parent = path.parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{path}: cannot write there ({probe} is not a folder)")
    if not os.access(probe, os.W_OK):
        raise UsageError(f"{path}: cannot write there ({probe} is not writable)")


def progress_bar(args, total: int, unit: str, desc: str):
    from tqdm import tqdm

    quiet = args.quiet or not sys.stderr.isatty()
    return tqdm(total=total, unit=unit, desc=desc, disable=quiet, dynamic_ncols=True, leave=False)


def say(args, text: str) -> None:
    if not args.quiet:
        print(text)


def encode_options(args) -> dict:
    return dict(
        size=args.size,
        resize=args.resize,
        max_area=args.max_area,
        start=args.start,
        fps=args.fps,
        frames=args.frames,
        frame_policy=args.frame_policy,
        alpha=args.alpha,
    )


# ---- commands -------------------------------------------------------------------------------
def cmd_encode(args) -> int:
    import wanvae
    from wanvae.pipeline import plan_encode
    from wanvae.video import probe
    from wanvae.weights import file_sha256

    out = Path(args.out) if args.out else Path(Path(args.input).stem + (".pt" if args.format == "pt" else ".safetensors"))
    if args.format:
        out = out.with_suffix(".pt" if args.format == "pt" else ".safetensors")
    if out.suffix not in (".safetensors", ".pt"):
        raise UsageError(f"{out}: latents are written as .safetensors or .pt (or pass --format)")
    check_output(out, args.overwrite, inputs=(args.input, resolve_weights(args)))
    info = probe(args.input)  # a missing, corrupt or stream-less file fails before weights load
    vae, weights = load_model(args, parts="encoder")
    info, plan, size = plan_encode(args.input, vae, info=info, **encode_options(args))
    started = time.perf_counter()
    bar = progress_bar(args, plan.count, "frame", Path(args.input).name)

    def progress(frames: int, latents: int) -> None:
        bar.n = frames
        bar.set_postfix_str(f"{latents} latent frames")

    latents, meta = wanvae.encode_file(
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
    wanvae.save_latents(out, latents, meta, overwrite=args.overwrite)
    took = time.perf_counter() - started
    say(args, f"{out}: latents {list(latents.shape[1:])} from {plan.count} frames at {size[0]}x{size[1]} in {took:.1f}s")
    return EXIT_OK


def cmd_decode(args) -> int:
    import wanvae
    from wanvae.pipeline import decode_latents_to_file

    latents, meta = wanvae.load_latents(args.latents)
    out = Path(args.out) if args.out else Path(Path(args.latents).stem + (".png" if latents.shape[2] == 1 else ".mp4"))
    check_output(out, args.overwrite, inputs=(args.latents, resolve_weights(args)))
    vae, _ = load_model(args, parts="decoder")
    if latents.shape[1] != vae.config.z_dim:
        from wanvae.checks import latent_channels_error

        raise UsageError(f"{args.latents}: {latent_channels_error(latents.shape[1], vae.config)}")
    from wanvae.latents import metadata_warnings
    from wanvae.weights import file_sha256

    sha = file_sha256(resolve_weights(args)) if meta.get("checkpoint_sha256") else None
    notes = metadata_warnings(meta, tuple(latents.shape), vae.config.spatial_ratio, vae.config.temporal_ratio, sha)
    for note in notes:
        print(f"wanvae decode: warning: {args.latents}: {note}", file=sys.stderr)
    recorded = meta.get("fps") if not any("fps" in n for n in notes) else None
    fps = args.fps or float(recorded or vae.config.pipeline_fps)
    frames = vae.config.pixel_frames(latents.shape[2])
    bar = progress_bar(args, frames, "frame", out.name)
    started = time.perf_counter()

    def progress(done: int, latent: int) -> None:
        bar.n = done
        bar.refresh()

    decode_latents_to_file(latents, vae, out, fps=fps, tile=args.tile, overwrite=args.overwrite, progress=progress)
    bar.close()
    h, w = latents.shape[3] * vae.config.spatial_ratio, latents.shape[4] * vae.config.spatial_ratio
    say(args, f"{out}: {frames} frames at {w}x{h}, {fps:g} fps in {time.perf_counter() - started:.1f}s")
    return EXIT_OK


def cmd_roundtrip(args) -> int:
    import torch

    import wanvae
    from wanvae import video
    from wanvae.pipeline import plan_encode

    out_dir = Path(args.out or "wanvae-roundtrip")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir}: exists and is not a folder")
    # That an output is an input is the news, even where another output also exists.
    for overwrite in (True, args.overwrite):
        for name in ROUNDTRIP_OUTPUTS:
            check_output(out_dir / name, overwrite, inputs=(args.input, resolve_weights(args)))
    info = video.probe(args.input)
    vae, weights = load_model(args)
    info, plan, size = plan_encode(args.input, vae, info=info, **encode_options(args))
    started = time.perf_counter()
    latents, meta = wanvae.encode_file(args.input, vae, **encode_options(args), tile=args.tile)
    recon = vae.decode(latents.to(vae.device, vae.dtype), tile=args.tile)[0].float().cpu()  # [3, T, H, W]
    mode = video.frame_mode(args.resize, args.size, args.max_area)
    original = torch.stack(list(video.read_frames(info, plan, size, mode, args.alpha)), dim=1)
    took = time.perf_counter() - started
    from wanvae.atomic import staged_files

    with staged_files(out_dir) as stage:  # all four files, or none of them
        report = write_comparison(stage, original, recon, plan.fps)
        report.update(latent_shape=list(latents.shape[1:]), seconds=round(took, 2), source=str(args.input))
        (stage / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    if not args.quiet:
        for i, (p, s) in enumerate(zip(report["psnr_per_frame"], report["ssim_per_frame"])):
            print(f"frame {i:4d}  PSNR {p:6.2f} dB  SSIM {s:.4f}")
    say(args, f"{out_dir}: PSNR {report['psnr']:.2f} dB, SSIM {report['ssim']:.4f} over {original.shape[1]} frames, latents {report['latent_shape']}, {took:.1f}s")
    return EXIT_OK


ROUNDTRIP_OUTPUTS = ("metrics.json", "side_by_side.mp4", "reconstruction.mp4", "frames.png")


def write_comparison(out_dir: Path, original, recon, fps: float) -> dict:
    """Side-by-side video and PNG strip (original | reconstruction | difference), and the numbers."""
    import torch

    from wanvae import metrics, video

    out_dir.mkdir(parents=True, exist_ok=True)
    p = metrics.psnr(original, recon)
    s = metrics.ssim(original, recon)
    diff = ((original - recon).abs() * 4 - 1).clamp(-1, 1)  # amplified x2 in [0, 1] terms
    side = torch.cat([original, recon, diff], dim=3)  # [3, T, H, 3W]
    with video.VideoWriter(out_dir / "side_by_side.mp4", fps, overwrite=True) as w:
        for f in side.unbind(1):
            w.write(f)
    with video.VideoWriter(out_dir / "reconstruction.mp4", fps, overwrite=True) as w:
        for f in recon.unbind(1):
            w.write(f)
    picks = sorted({0, side.shape[1] // 2, side.shape[1] - 1})
    strip = torch.cat([side[:, i] for i in picks], dim=1)  # frames stacked vertically
    with video.VideoWriter(out_dir / "frames.png", 1.0, overwrite=True) as w:
        w.write(strip)
    mse = (original - recon).pow(2).mean()
    return {
        "psnr": float(10 * torch.log10(4.0 / mse)),
        "ssim": float(s.mean()),
        "psnr_per_frame": [round(float(v), 3) for v in p],
        "ssim_per_frame": [round(float(v), 5) for v in s],
        "frames_in_strip": picks,
    }


def cmd_info(args) -> int:
    from wanvae.latents import load_latents
    from wanvae.weights import describe, file_sha256

    path = Path(args.file)
    result: dict
    latents_file = path.suffix in (".safetensors", ".pt") and path.is_file() and _holds_latents(path)
    if latents_file:
        latents, meta = load_latents(path)
        result = {"kind": "latents", "shape": list(latents.shape[1:]), "dtype": str(latents.dtype).removeprefix("torch."), "metadata": meta}
    else:
        result = {**describe(path), "sha256": file_sha256(path)}
    text = json.dumps(result, indent=2)
    if args.out:
        from wanvae.atomic import atomic_path

        check_output(Path(args.out), args.overwrite, inputs=(args.file,))
        with atomic_path(args.out) as tmp:
            tmp.write_text(text + "\n")
    print(text)
    if result["kind"] == "checkpoint" and not result["fits"]:
        raise UsageError(f"{path}: {result['problem']}")
    return EXIT_OK


def _holds_latents(path: Path) -> bool:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return "latents" in f.keys()
        except Exception:
            return False
    import torch

    try:
        obj = torch.load(str(path), map_location="meta", weights_only=True)
    except Exception:
        return False
    return isinstance(obj, dict) and "latents" in obj


def cmd_convert(args) -> int:
    import wanvae

    out = Path(args.out_pos or args.out or "")
    if not str(out) or str(out) == ".":
        raise UsageError("convert needs an output: wanvae convert CKPT OUT --to original|diffusers")
    if args.to == "original" and out.suffix not in (".safetensors", ".pth", ".pt"):
        raise UsageError(f"{out}: an original-layout checkpoint is .safetensors or .pth")
    check_output(out, args.overwrite, inputs=(args.checkpoint,))
    vae = wanvae.load(args.checkpoint)
    wanvae.save(vae, out, format=args.to)
    say(args, f"{out}: {args.to} layout, {sum(p.numel() for p in vae.parameters()):,} parameters")
    return EXIT_OK


# ---- parser ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show a traceback on errors")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    common.add_argument("--overwrite", action="store_true", help="replace an existing output")

    model = Parser(add_help=False)
    model.add_argument("--weights", metavar="CKPT", help="checkpoint: Wan2.1_VAE.pth, .safetensors or a diffusers folder (default: $WANVAE_WEIGHTS)")
    model.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    model.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="compute precision (default float32; on a CPU, bf16 is about 2x faster where it has AVX512-BF16 or AMX and far slower where it has not)")
    model.add_argument("--encoder-dtype", choices=sorted(DTYPES), help="the encoder's precision, if not --dtype (bf16 encoding costs more quality than bf16 decoding)")
    model.add_argument("--decoder-dtype", choices=sorted(DTYPES), help="the decoder's precision, if not --dtype")
    model.add_argument("--compile", action="store_true", help="run through torch.compile (pays off on a GPU; on a CPU eager is faster)")
    model.add_argument("--tile", type=parse_tile, default="auto", metavar="PX", help="spatial tile in pixels: 256, 384x256, 'auto' (default: from free memory) or 'none'; exact, no seams")

    frames = Parser(add_help=False)
    frames.add_argument("--size", type=parse_size, metavar="WxH", help="output size, multiples of 8 (16 for Wan 2.2); default: the source's centre, cropped (never resampled) to multiples of 16 (32 for Wan 2.2)")
    frames.add_argument("--resize", choices=("crop", "pad", "stretch"), default="crop", help="how --size is reached: cover+center-crop (default), fit+pad, or stretch")
    frames.add_argument("--max-area", type=argtypes.area, metavar="A", help="Wan2.1's rule: keep the aspect ratio, area <= A, multiples of 16 (e.g. 399360 for 480p)")
    frames.add_argument("--start", type=argtypes.seconds, default=0.0, metavar="SECONDS", help="skip to this time")
    frames.add_argument("--fps", type=argtypes.frame_rate, metavar="F", help="resample time to F frames per second (nearest source frame; 0 < F <= 1000)")
    frames.add_argument("--frames", type=argtypes.frame_count, metavar="N", help="use N frames (after resampling); 1 + 4k, e.g. 81")
    frames.add_argument("--alpha", choices=("refuse", "black", "white"), default="refuse", help="images or videos with transparent pixels: refuse them (default), or composite them on a black or white background (alpha is never dropped silently)")
    frames.add_argument("--frame-policy", choices=("error", "trim", "pad"), default="error", help="when the count is not 1 + 4k: error (default), trim the rest, or pad by repeating the last frame")

    parser = Parser(prog="wanvae", description="The Wan 2.1 and Wan 2.2 video VAEs: videos and images to Wan latents and back.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("encode", parents=[common, model, frames], help="video or image -> latents file", description="Encode a video (mp4, mkv, webm, mov, gif, ...) or an image (png, jpg, webp) into normalised Wan latents [16, t, h, w].")
    p.add_argument("input", help="video or image file")
    p.add_argument("-o", "--out", help="latents file, .safetensors (default) or .pt")
    p.add_argument("--format", choices=("safetensors", "pt"), help="output format (default: by the -o suffix)")
    p.add_argument("--sample", action="store_true", help="a sample from the posterior instead of its mean")
    p.add_argument("--seed", type=argtypes.seed, help="seed for --sample (default 0)")
    p.set_defaults(run=cmd_encode)

    p = sub.add_parser("decode", parents=[common, model], help="latents file -> mp4 (or png)", description="Decode a latents file into an H.264 mp4, or a PNG for a single latent frame.")
    p.add_argument("latents", help="latents file from `wanvae encode`")
    p.add_argument("-o", "--out", help="output .mp4 (or .png for one frame)")
    p.add_argument("--fps", type=argtypes.frame_rate, help="frame rate (default: the one recorded at encode time, else the family's: 16 for Wan 2.1, 24 for Wan 2.2)")
    p.set_defaults(run=cmd_decode)

    p = sub.add_parser("roundtrip", parents=[common, model, frames], help="encode + decode, report PSNR/SSIM", description="Encode and decode a file; report PSNR and SSIM per frame and overall; write a side-by-side video and a PNG strip.")
    p.add_argument("input", help="video or image file")
    p.add_argument("-o", "--out", help="output folder (default wanvae-roundtrip/)")
    p.set_defaults(run=cmd_roundtrip)

    p = sub.add_parser("info", parents=[common], help="what a checkpoint or latents file holds")
    p.add_argument("file", help="checkpoint (.pth, .safetensors, diffusers folder) or latents file")
    p.add_argument("-o", "--out", help="also write the JSON here")
    p.set_defaults(run=cmd_info)

    p = sub.add_parser("convert", parents=[common], help="checkpoint -> original or diffusers layout")
    p.add_argument("checkpoint", help="any checkpoint wanvae loads")
    p.add_argument("out_pos", nargs="?", metavar="OUT", help="output file (original) or folder (diffusers)")
    p.add_argument("-o", "--out", help="same as OUT")
    p.add_argument("--to", choices=("original", "diffusers"), required=True, help="target layout")
    p.set_defaults(run=cmd_convert)

    for extra in _extra_commands():
        extra(sub, common, model, frames)
    return parser


def _extra_commands():
    """Commands defined in their own modules (demo, train, cache), when present."""
    found = []
    for name in ("demo", "train", "cache"):
        try:
            module = __import__(f"wanvae.{name}_cli", fromlist=["add_parser"])
        except ModuleNotFoundError as e:
            if e.name != f"wanvae.{name}_cli":
                raise
            continue
        found.append(module.add_parser)
    return found


def _version() -> str:
    from wanvae import __version__

    return __version__


class Terminated(BaseException):
    """SIGTERM, raised where the program is, so the same clean-up as for Ctrl-C runs."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Both end the command the same way: temporaries removed by the atomic writers' clean-up,
    # one line, the shell's status for the signal (128 + its number).
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"wanvae {args.command}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except Terminated:
        print(f"wanvae {args.command}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except Exception as e:  # noqa: BLE001 - every error becomes one line and a status
        code = exit_code(e)
        if args.debug:
            traceback.print_exc()
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"wanvae {args.command}: error: {message}", file=sys.stderr)
        return code
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_code(e: Exception) -> int:
    from wanvae.video import MediaError
    from wanvae.weights import CheckpointError

    if isinstance(e, (UsageError, MediaError, CheckpointError, FileExistsError, ValueError)):
        return EXIT_USAGE
    if isinstance(e, (NotADirectoryError, IsADirectoryError, PermissionError)):
        return EXIT_USAGE
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
