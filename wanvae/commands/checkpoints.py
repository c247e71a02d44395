"""`wanvae info` and `convert`: what a checkpoint or latents file holds, and a checkpoint in the other layout."""

from __future__ import annotations

import json
from pathlib import Path

from .common import EXIT_OK, UsageError, check_output, say


def add_parsers(sub, common, model, frames) -> None:
    p = sub.add_parser("info", parents=[common], help="what a checkpoint or latents file holds")
    p.add_argument("file", help="checkpoint (.pth, .safetensors, diffusers folder) or latents file")
    p.add_argument("-o", "--out", help="also write the JSON here")
    p.set_defaults(run=info)

    p = sub.add_parser("convert", parents=[common], help="checkpoint -> original or diffusers layout")
    p.add_argument("checkpoint", help="any checkpoint wanvae loads")
    p.add_argument("out_pos", nargs="?", metavar="OUT", help="output file (original) or folder (diffusers)")
    p.add_argument("-o", "--out", help="same as OUT")
    p.add_argument("--to", choices=("original", "diffusers"), required=True, help="target layout")
    p.set_defaults(run=convert)


def info(args) -> int:
    from ..io.files import holds_latents
    from ..io.latents import load_latents
    from ..io.weights import describe, file_sha256

    path = Path(args.file)
    result: dict
    latents_file = holds_latents(path)
    if latents_file:
        latents, meta = load_latents(path)
        result = {"kind": "latents", "shape": list(latents.shape[1:]), "dtype": str(latents.dtype).removeprefix("torch."), "metadata": meta}
    else:
        result = {**describe(path), "sha256": file_sha256(path)}
    text = json.dumps(result, indent=2)
    if args.out:
        from ..io.atomic import atomic_path

        check_output(Path(args.out), args.overwrite, inputs=(args.file,))
        with atomic_path(args.out) as tmp:
            tmp.write_text(text + "\n")
    print(text)
    if result["kind"] == "checkpoint" and not result["fits"]:
        raise UsageError(f"{path}: {result['problem']}")
    return EXIT_OK


def convert(args) -> int:
    from ..io.weights import load, save

    out = Path(args.out_pos or args.out or "")
    if not str(out) or str(out) == ".":
        raise UsageError("convert needs an output: wanvae convert CKPT OUT --to original|diffusers")
    if args.to == "original" and out.suffix not in (".safetensors", ".pth", ".pt"):
        raise UsageError(f"{out}: an original-layout checkpoint is .safetensors or .pth")
    check_output(out, args.overwrite, inputs=(args.checkpoint,))
    vae = load(args.checkpoint)
    save(vae, out, format=args.to)
    say(args, f"{out}: {args.to} layout, {sum(p.numel() for p in vae.parameters()):,} parameters")
    return EXIT_OK
