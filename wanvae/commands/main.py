"""The `wanvae` command: a parser over a static table of command modules, each a thin layer
over the library.

Exit status: 0 success, 2 bad usage or bad input, 3 a batch finished with some items
failed, 1 anything else. Each error is one line on stderr; a traceback only with --debug.
Every value is checked by the parser (`io.values`) before torch is imported.
"""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
import warnings

from .. import __version__
from ..io import values
from . import cache, checkpoints, codec, demo, train
from .common import DTYPES, EXIT_FAILED, EXIT_USAGE, Parser, UsageError

# Each module adds its sub-commands, in the order `wanvae --help` lists them.
COMMANDS = (codec.add_parsers, checkpoints.add_parsers, demo.add_parser, train.add_parser, cache.add_parser)


def build_parser() -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show a traceback on errors")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    common.add_argument("--overwrite", action="store_true", help="replace an existing output")

    model = Parser(add_help=False)
    model.add_argument("--weights", metavar="CKPT", help="checkpoint: Wan2.1_VAE.pth, .safetensors, a diffusers folder, or 'demo' for the bundled demo model (default: $WANVAE_WEIGHTS)")
    model.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    model.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="compute precision (default float32; on a CPU, bf16 is about 2x faster where it has AVX512-BF16 or AMX and far slower where it has not)")
    model.add_argument("--encoder-dtype", choices=sorted(DTYPES), help="the encoder's precision, if not --dtype (bf16 encoding costs more quality than bf16 decoding)")
    model.add_argument("--decoder-dtype", choices=sorted(DTYPES), help="the decoder's precision, if not --dtype")
    model.add_argument("--compile", action="store_true", help="run through torch.compile (pays off on a GPU; on a CPU eager is faster)")
    model.add_argument("--tile", type=values.tile, default="auto", metavar="PX", help="spatial tile in pixels, at least 128 (256 for Wan 2.2): 256, 384x256, 'auto' (default: from free memory) or 'none'; exact, no seams")

    frames = Parser(add_help=False)
    frames.add_argument("--size", type=values.size, metavar="WxH", help="output size, multiples of 8 (16 for Wan 2.2); default: the source's centre, cropped (never resampled) to multiples of 16 (32 for Wan 2.2)")
    frames.add_argument("--resize", choices=("crop", "pad", "stretch"), default="crop", help="how --size is reached: cover+center-crop (default), fit+pad, or stretch")
    frames.add_argument("--max-area", type=values.area, metavar="A", help="Wan2.1's rule: keep the aspect ratio, area <= A, multiples of 16 (e.g. 399360 for 480p)")
    frames.add_argument("--start", type=values.seconds, default=0.0, metavar="SECONDS", help="skip to this time")
    frames.add_argument("--fps", type=values.frame_rate, metavar="F", help="resample time to F frames per second (nearest source frame; 0 < F <= 1000)")
    frames.add_argument("--frames", type=values.frame_count, metavar="N", help="use N frames (after resampling); 1 + 4k, e.g. 81")
    frames.add_argument("--alpha", choices=("refuse", "black", "white"), default="refuse", help="images or videos with transparent pixels: refuse them (default), or composite them on a black or white background (alpha is never dropped silently)")
    frames.add_argument("--frame-policy", choices=("error", "trim", "pad"), default="error", help="when the count is not 1 + 4k: error (default), trim the rest, or pad by repeating the last frame")

    parser = Parser(prog="wanvae", description="The Wan 2.1 and Wan 2.2 video VAEs: videos and images to Wan latents and back.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for add in COMMANDS:
        add(sub, common, model, frames)
    return parser


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
    with warnings.catch_warnings():  # restores Python's warning printer afterwards
        show_notes(args.command)
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


def show_notes(command: str) -> None:
    """The library's notes (`CheckpointNote`: what a load skipped) as one line each on
    stderr, not Python's two-line warning with a source line. Nothing is imported here:
    torch loads only once a command needs it (bad numbers are refused before)."""
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        weights = sys.modules.get("wanvae.io.weights")  # loaded, if it is what warned
        if weights is not None and issubclass(category, weights.CheckpointNote):
            print(f"wanvae {command}: note: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def exit_code(e: Exception) -> int:
    from ..io.video import MediaError
    from ..io.weights import CheckpointError

    if isinstance(e, (UsageError, MediaError, CheckpointError, FileExistsError, ValueError)):
        return EXIT_USAGE
    if isinstance(e, (NotADirectoryError, IsADirectoryError, PermissionError)):
        return EXIT_USAGE
    return EXIT_FAILED
