"""What every command shares: exit codes, the one-line error, the device and weights choice,
output checks made before any work, progress and summaries.

Nothing here imports torch at module level: the parser and its checks run without it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16"}


class UsageError(Exception):
    """Bad usage or bad input: exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse with the house's error format: one line, exit status 2 (argparse's own
    prints the whole usage first)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# `--weights demo` (or WANVAE_WEIGHTS=demo): the small model bundled in the package, whose
# file sits somewhere in site-packages. A file of that name is reached as ./demo.
DEMO = "demo"


def resolve_weights(args) -> str:
    path = args.weights or os.environ.get("WANVAE_WEIGHTS")
    if not path:
        raise UsageError("no checkpoint: pass --weights CKPT (or --weights demo, the bundled demo model) or set "
                         "WANVAE_WEIGHTS (wanvae never picks weights on its own)")
    if path == DEMO:
        from ..training.demo import DEMO_WEIGHTS, asset

        return str(asset(DEMO_WEIGHTS))
    return path


def check_tile(tile, config, parts: str = "encoder") -> None:
    """Refuse a --tile below the model's smallest tile instead of running a larger one unsaid:
    a tile must span 16 latent positions, more than the layers reach across a seam (in
    output pixels when decoding: twice as many for a 2x upscaling decoder)."""
    from ..coding.tiling import MIN_TILE_LATENTS

    if tile is None or isinstance(tile, str):
        return
    sides = (tile, tile) if isinstance(tile, int) else tuple(tile)
    least = MIN_TILE_LATENTS * (config.spatial_ratio if parts == "encoder" else config.decoded_spatial_ratio)
    if min(sides) < least:
        given = "x".join(str(v) for v in dict.fromkeys(sides)) if isinstance(tile, int) else f"{sides[0]}x{sides[1]}"
        raise UsageError(f"--tile {given}: this model's tiles are at least {least} px ({MIN_TILE_LATENTS} latent positions, "
                         f"more than its layers reach across a seam); use --tile {least} or more, 'auto' or 'none'")


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

    from ..io.weights import load

    from ..io.weights import peek_config

    path = resolve_weights(args)
    check_tile(getattr(args, "tile", None), peek_config(path), parts)

    def dtype_of(name: str | None):
        return None if name is None else getattr(torch, DTYPES[name])

    device = chosen_device(args)
    vae = load(
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
    that exists (without --overwrite), that is one of the command's inputs (ever), or
    whose folder refuses a file (a read-only mount, /proc: permission bits alone do not
    tell, and root passes every access check)."""
    path = Path(path)
    for source in inputs:
        if source is not None and same_file(path, source):
            raise UsageError(f"{path}: is also an input of this command; write the output somewhere else")
    if path.exists() and not overwrite:
        raise UsageError(f"{path}: already exists (pass --overwrite to replace it)")
    if path.exists() and path.is_dir() and path.suffix:
        raise UsageError(f"{path}: is a folder")
    probe = path.parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{path}: cannot write there ({probe} is not a folder)")
    try:  # the very operation the atomic writers start with: a hidden file beside the output
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".wanvae-probe-"):
            pass
    except OSError as e:
        raise UsageError(f"{path}: cannot write there ({probe}: {e.strerror or e}); choose another folder") from None


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


