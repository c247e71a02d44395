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
    p.add_argument("--to", choices=("original", "diffusers"), help="target layout (default: original for a .safetensors, .pth or .pt OUT, diffusers for a folder)")
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


ORIGINAL_SUFFIXES = (".safetensors", ".pth", ".pt")


def convert(args) -> int:
    import torch

    from ..io.weights import describe, load, save

    out = Path(args.out_pos or args.out or "")
    if not str(out) or str(out) == ".":
        raise UsageError("convert needs an output: wanvae convert CKPT OUT (a .safetensors or .pth file, or a folder for diffusers)")
    to = args.to or ("original" if out.suffix in ORIGINAL_SUFFIXES else "diffusers")
    if to == "original" and out.suffix not in ORIGINAL_SUFFIXES:
        raise UsageError(f"{out}: an original-layout checkpoint is .safetensors or .pth")
    if to == "diffusers" and out.suffix in ORIGINAL_SUFFIXES:
        raise UsageError(f"{out}: diffusers' layout is a folder (config.json and the weights), not a {out.suffix} file")
    check_output(out, args.overwrite, inputs=(args.checkpoint,))
    # The weights keep their precision: an fp16 file stays fp16 (half the size), unless its
    # tensors disagree, when fp32 holds every one of them exactly.
    dtypes = describe(args.checkpoint)["dtypes"]
    dtype = getattr(torch, dtypes[0]) if len(dtypes) == 1 and dtypes[0] in ("float32", "float16", "bfloat16") else torch.float32
    vae = load(args.checkpoint, dtype=dtype)
    save(vae, out, format=to)
    kept = str(dtype).removeprefix("torch.")
    say(args, f"{out}: {to} layout, {sum(p.numel() for p in vae.parameters()):,} parameters in {kept}, config {vae.config.name!r}")
    return EXIT_OK
