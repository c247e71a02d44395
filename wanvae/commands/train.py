"""`wanvae train`: train or fine-tune a WanVAE on a folder of videos and images."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _number(text: str, expected: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def _share(text: str) -> float:
    value = _number(text, "a number between 0 and 1")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a share between 0 and 1, got {text}")
    return value


def _weight(text: str) -> float:
    value = _number(text, "a number >= 0")
    if not value >= 0.0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"a loss weight must be >= 0, got {text}")
    return value


def _decay(text: str) -> float:
    value = _number(text, "a number in [0, 1)")
    if not 0.0 <= value < 1.0:  # also rejects nan; 1 would never move from the first weights
        raise argparse.ArgumentTypeError(f"a decay in [0, 1) (0.999 averages about the last 1000 steps), got {text}")
    return value


def _magnify(text: str) -> float:
    value = _number(text, "a number >= 1")
    if not 1.0 <= value <= 16.0:  # also rejects nan; past 16x a view is a few blurred pixels
        raise argparse.ArgumentTypeError(f"a magnification between 1 and 16, got {text}")
    return value


def _clip(text: str) -> tuple[int, int, int]:
    try:
        w, h, t = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxHxT such as 64x64x9, got {text!r}") from None
    if (t - 1) % 4 or min(w, h, t) < 1:
        raise argparse.ArgumentTypeError(f"--clip {text}: W and H must be positive and T must be 1 + 4k")
    return w, h, t  # W and H are checked against the model's spatial factor once it is known


def add_parser(sub, common, model, frames) -> None:
    from ..io.values import float_in, int_in, seed
    from ..io.values import size as parse_size

    p = sub.add_parser(
        "train",
        parents=[common],
        help="train or fine-tune a model on videos and images",
        description="Train (or fine-tune with --init) a WanVAE on a folder of videos and images: photos get a "
        "synthetic moving camera, videos give random clips; random crops and flips. Loss: L1 + SSIM + a small KL.",
    )
    p.add_argument("data", help="folder of videos and images (searched recursively)")
    p.add_argument("-o", "--out", required=True, help="checkpoint to write (.safetensors), updated at every validation")
    p.add_argument("--config", default=None, help="preset name (tiny, small, wan2.1, tiny-2.2, small-2.2, wan2.2) or a JSON "
                   "file of VAEConfig fields (default: wan2.1)")
    p.add_argument("--init", metavar="CKPT", help="start from these weights (fine-tuning)")
    p.add_argument("--steps", type=int_in(1, 10**9, "a step count"), default=1000)
    p.add_argument("--batch", type=int_in(1, 4096, "a batch size"), default=4)
    p.add_argument("--clip", type=_clip, default=(64, 64, 9), metavar="WxHxT", help="training clip size (default 64x64x9)")
    p.add_argument("--lr", type=float_in(0.0, 10.0, "a learning rate", open_low=True), default=1e-3)
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--val", metavar="DIR", help="held-out images or videos, checked every --val-every steps")
    p.add_argument("--val-every", type=int_in(1, 10**9, "a step count"), default=200)
    p.add_argument("--alternate-clip", type=_clip, default=None, metavar="WxHxT",
                   help="every other step trains on clips of this size instead (e.g. short clips beside long ones)")
    p.add_argument("--val-clip", type=_clip, default=None, metavar="WxHxT", help="validation clip size (default: --clip)")
    p.add_argument("--procedural", type=_share, default=0.15, metavar="P", help="share of procedural scenes (default 0.15)")
    p.add_argument("--dead-leaves", type=_share, default=0.35, metavar="P", help="share of dead-leaves pictures in camera motion (default 0.35)")
    p.add_argument("--any-scale", action="store_true", help="show photos at any scale from their own pixels up to the whole "
                   "picture, not only shrunk to fit the clip (for small clips of big photos)")
    p.add_argument("--magnify", type=_magnify, default=1.0, metavar="M", help="with --any-scale, let the camera zoom in "
                   "until one photo pixel is M clip pixels wide (default 1): frames of real video are smoother at "
                   "the pixel level than shrunk photos")
    p.add_argument("--view", type=parse_size, default=None, metavar="WxH", help="film photos (resize videos) at WxH and "
                   "train on a random --clip-sized crop: motion and scale as in WxH frames at the cost of small clips")
    p.add_argument("--recolour", type=_share, default=0.0, metavar="P", help="share of clips given random new colours "
                   "(default 0; for data that is mostly grey)")
    p.add_argument("--mse", type=_weight, default=0.0, metavar="W", help="weight of a squared-error term beside L1 "
                   "(default 0): PSNR is squared error, and L1 pulls no harder on large errors")
    p.add_argument("--coarse-colour", type=_weight, default=0.0, metavar="W", help="weight of the squared colour error "
                   "averaged over 17-pixel windows (default 0): wrong hue over whole regions, which --mse weighs like grain")
    p.add_argument("--chroma", type=_share, default=0.0, metavar="P", help="share of clips whose hue, saturation and a "
                   "smooth colour field are randomised, brightness kept (default 0; for data short of colour)")
    p.add_argument("--images", type=_share, default=0.0, metavar="P", help="share of steps on single images (batch x T of "
                   "them) instead of clips: trains the path an image's first frame takes (default 0)")
    p.add_argument("--stop-after", type=int_in(1, 10**9, "a step count"), default=None, metavar="N", help="stop (with a checkpoint) at step N, keeping "
                   "the learning-rate schedule of --steps: one sitting of a longer run")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--bf16", action="store_true", help="forward pass under bfloat16 autocast (weights, loss and "
                   "validation stay fp32): faster on GPUs and on CPUs with AVX512-BF16, slower on other CPUs")
    p.add_argument("--ema", type=_decay, default=0.0, metavar="D", help="checkpoint and validate a moving average of "
                   "the weights, decay D per step (default 0: the weights as trained)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parts = p.add_mutually_exclusive_group()
    parts.add_argument("--decoder-only", action="store_true", help="train only the decoder: the latent space stays as it is")
    parts.add_argument("--encoder-only", action="store_true", help="train only the encoder: the decoder stays as it is "
                       "and the encoder learns to feed it (e.g. after a --decoder-only fine-tune)")
    p.set_defaults(run=run)


def run(args) -> int:
    from .. import config as config_mod
    from ..training import train as train_mod
    from .common import UsageError, check_output, chosen_device, progress_bar

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise UsageError(f"{out}: training writes a .safetensors checkpoint")
    if not Path(args.data).is_dir():
        raise UsageError(f"{args.data}: not a folder")
    if args.config and (args.init or args.resume):
        raise UsageError("--config starts a new model; it does not go with --init or --resume")
    if args.magnify != 1.0 and not args.any_scale:
        raise UsageError("--magnify sets how far --any-scale zooms in: give --any-scale with it")
    for flag, size in (("--clip", args.clip), ("--alternate-clip", args.alternate_clip)):
        if args.view and size and (args.view[0] < size[0] or args.view[1] < size[1]):
            w, h, _ = size
            raise UsageError(f"--view {args.view[0]}x{args.view[1]} is smaller than the {w}x{h} clips ({flag}) cropped from it: give at least {w}x{h}")
    for flag, given in (("--decoder-only", args.decoder_only), ("--encoder-only", args.encoder_only)):
        if given and not (args.init or args.resume):
            raise UsageError(f"{flag} fine-tunes an existing model: give --init CKPT")
    cfg = None
    if args.config:
        path = Path(args.config)
        cfg = config_mod.VAEConfig.from_dict(json.loads(path.read_text())) if path.suffix == ".json" else config_mod.preset(args.config)
    from ..io.weights import peek_config

    model_cfg = cfg or (peek_config(args.out if args.resume else args.init) if (args.init or args.resume) else config_mod.VAEConfig())
    s = model_cfg.spatial_ratio
    for flag, size in (("--clip", args.clip), ("--alternate-clip", args.alternate_clip), ("--val-clip", args.val_clip)):
        if size and (size[0] % s or size[1] % s):
            raise UsageError(f"{flag} {size[0]}x{size[1]}x{size[2]}: W and H must be multiples of {s} for this {model_cfg.family} model")
    if not args.resume:
        # --init is read before the first checkpoint is written over -o: never the same file.
        check_output(out, args.overwrite, inputs=(args.init,))
    opts = train_mod.TrainOptions(
        steps=args.steps,
        batch=args.batch,
        clip=args.clip,
        alternate_clip=args.alternate_clip,
        lr=args.lr,
        seed=args.seed,
        val_every=args.val_every,
        decoder_only=args.decoder_only,
        encoder_only=args.encoder_only,
        val_clip=args.val_clip,
        procedural=args.procedural,
        dead_leaves=args.dead_leaves,
        any_scale=args.any_scale,
        magnify=args.magnify,
        view=args.view,
        recolour=args.recolour,
        chroma=args.chroma,
        mse_weight=args.mse,
        coarse_colour_weight=args.coarse_colour,
        stop_after=args.stop_after,
        images=args.images,
        bf16=args.bf16,
        ema=args.ema,
    )
    bar = progress_bar(args, args.steps, "step", out.name)

    def progress(step: int, info: dict) -> None:
        bar.n = step
        bar.set_postfix_str(f"loss {info['loss']:.4f} psnr {info['psnr']:.2f}")
        if "val_psnr" in info and bar.disable and not args.quiet:  # no bar: one line per validation
            print(f"step {step}: loss {info['loss']:.4f}, train PSNR {info['psnr']:.2f} dB, "
                  f"val PSNR {info['val_psnr']:.2f} dB, SSIM {info['val_ssim']:.4f}", flush=True)

    result = train_mod.train(args.data, out, config=cfg, init=args.init, opts=opts, val=args.val, resume=args.resume,
                             progress=progress, device=chosen_device(args))
    bar.close()
    if not args.quiet:
        print(json.dumps(result))
    return 0
