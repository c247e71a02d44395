"""The GPU table: wanvae (eager, compiled, exactly tiled) against diffusers' AutoencoderKLWan
(eager, untiled and with its tiling) in one precision, 81 frames at 1280x720.

Prepared to run unattended in a few minutes on a lent GPU (see bench/gpu.sh): rows run
in order of importance (Wan 2.1 decode first), each written to `--out` as a JSON line the
moment it finishes, and rows that would start past `--budget` seconds are written as
skipped rather than run. Times are CUDA events around one call after a warm-up on a short
clip (for the compiled model: the first frame and a regular chunk, all it compiles for);
peak memory is `torch.cuda.max_memory_allocated` over that call, weights included.

    python bench/gpu.py --out results/gpu --dtype bfloat16            # on CUDA
    python bench/gpu.py --out /tmp/t --device cpu --frames 5 --width 64 --height 64 --families wan2.1   # a dry run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

import costs  # bench/costs.py, beside this script
import wanvae
from wanvae.model.layers import unpatchify
from wanvae.testing import randomize, reference_decode_unclamped, reference_for

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Clock:
    """Seconds of one call: CUDA events on a GPU, perf_counter elsewhere."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self, fn):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1e3, torch.cuda.max_memory_allocated() / 2**30, out
        t = time.perf_counter()
        out = fn()
        return time.perf_counter() - t, float("nan"), out


def inputs(family: str, frames: int, width: int, height: int, device, dtype):
    cfg = wanvae.preset(family)
    g = torch.Generator().manual_seed(0)
    video = (torch.rand(1, 3, frames, height, width, generator=g) * 2 - 1).to(device, dtype)
    latents = torch.randn(1, cfg.z_dim, cfg.latent_frames(frames), height // cfg.spatial_ratio, width // cfg.spatial_ratio, generator=g)
    return video, latents.to(device, dtype)


def plan(args) -> list[tuple[str, str, str]]:
    """(family, direction, implementation) in order of importance."""
    # diffusers' eager first: every later row reports its distance from it.
    impls = ["diffusers eager", "ours eager", "ours tiled", "diffusers tiled"] + (["ours compiled"] if args.compile else [])
    rows = []
    for direction in ("decode", "encode"):
        for family in args.families.split(","):
            rows += [(family, direction, impl) for impl in impls]
    rows.sort(key=lambda r: (r[1] != "decode", r[0] != "wan2.1"))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for rows.jsonl and machine.json")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    p.add_argument("--families", default="wan2.1,wan2.2")
    p.add_argument("--frames", type=int, default=81)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, help="default 720 for Wan 2.1, 704 for Wan 2.2 (its 5B model's size): bench/costs.py's rows")
    p.add_argument("--tile", type=int, default=256, help="our exact tile (pixels)")
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--budget", type=float, default=210.0, help="seconds after which no new row starts")
    args = p.parse_args()
    started = time.monotonic()
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import diffusers

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    (out / "machine.json").write_text(json.dumps({
        "device": gpu, "torch": torch.__version__, "cuda": torch.version.cuda, "diffusers": diffusers.__version__,
        "dtype": args.dtype, "date": time.strftime("%Y-%m-%d"), "case": f"{args.frames}f {args.width}x{args.height}",
    }))
    clock = Clock(device)
    # The counts of bench/costs.py for the same rows, printed beside what is measured here,
    # with the cost model's prediction for this GPU: the first GPU run checks the model.
    counted_rows, cost_model = costs.load_table(Path(__file__).with_name("costs.jsonl"))
    gpu_model = costs.model_for(gpu)
    rows_file = (out / "rows.jsonl").open("a")
    models: dict[str, tuple] = {}
    outputs: dict[tuple, torch.Tensor] = {}
    for family, direction, impl in plan(args):
        row = {"family": family, "direction": direction, "impl": impl}
        if time.monotonic() - started > args.budget:
            rows_file.write(json.dumps({**row, "skipped": "over the time budget"}) + "\n")
            rows_file.flush()
            continue
        try:
            if family not in models:
                models.clear()
                torch.cuda.empty_cache() if device.type == "cuda" else None
                ours = randomize(wanvae.WanVAE(wanvae.preset(family)), seed=0).to(device, dtype).eval()
                ref = reference_for(ours).to(device, dtype)
                height = args.height or (704 if family == "wan2.2" else 720)
                models[family] = (ours, ref, inputs(family, args.frames, args.width, height, device, dtype))
            ours, ref, (video, latents) = models[family]
            fn, warm = job(ours, ref, direction, impl, video, latents, args.tile)
            t = time.monotonic()
            with torch.no_grad():
                warm()
            row["warmup_s"] = round(time.monotonic() - t, 1)
            with torch.no_grad():
                seconds, peak, y = clock(fn)
            row.update(seconds=round(seconds, 3), peak_gib=round(peak, 2))
            row.update(counted(counted_rows, cost_model, gpu_model, family, direction, impl, args, video))
            outputs[(family, direction, impl)] = y.float().cpu()
            first = outputs.get((family, direction, "diffusers eager"))
            if first is not None and impl != "diffusers eager":
                row["max_abs_vs_diffusers_eager"] = (y.float().cpu() - first).abs().max().item()
            del y
        except Exception as e:  # a row that fails (out of memory, say) must not lose the others
            row["error"] = f"{type(e).__name__}: {e}"[:300]
        rows_file.write(json.dumps(row) + "\n")
        rows_file.flush()
        print(json.dumps(row), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    rows_file.close()
    print(f"done in {time.monotonic() - started:.0f} s; rows in {out / 'rows.jsonl'}")


IMPLS = {"ours eager": "wanvae", "ours compiled": "wanvae", "ours tiled": "wanvae", "diffusers eager": "diffusers", "diffusers tiled": "diffusers"}


def counted(rows, model, gpu, family: str, direction: str, impl: str, args, video) -> dict:
    """bench/costs.py's counts for this row (the compiled row: the eager path's), and the
    model's predicted time on this GPU: labelled, beside the measured figures."""
    tile = {"ours tiled": args.tile, "diffusers tiled": 256}.get(impl)
    row = costs.find(rows, job=direction, family=family, impl=IMPLS[impl], tile=tile, frames=video.shape[2],
                     width=video.shape[4], height=video.shape[3], dtype=args.dtype)
    if row is None:
        return {"counted": None}
    found = {k: row[k] for k in ("conv_flops", "other_bytes", "ops", "peak_bytes")}
    if model is not None and gpu is not None:
        found["predicted_s"] = round(model.predict(row, gpu), 3)
    return {"counted": found}


def job(ours, ref, direction: str, impl: str, video, latents, tile: int):
    """(the timed call, its warm-up on a short clip)."""
    short_video, short_latents = video[:, :, :9], latents[:, :, :3]
    if impl == "ours compiled" and not ours.compiled:
        ours.compile()
    elif impl != "ours compiled" and ours.compiled:
        ours.compile(disable=True)
    if impl.startswith("ours"):
        t = tile if impl == "ours tiled" else None
        if direction == "decode":
            return (lambda: ours.decode(latents, raw=True, clamp=False, tile=t)), (lambda: ours.decode(short_latents, raw=True, tile=t))
        return (lambda: ours.encode_moments(video, tile=t)[0]), (lambda: ours.encode_moments(short_video, tile=t))
    if impl == "diffusers tiled":
        ref.enable_tiling()
    else:
        ref.disable_tiling()
    if direction == "decode":
        p = ours.config.patch_size
        return (lambda: unpatchify(reference_decode_unclamped(ref, latents), p)), (lambda: reference_decode_unclamped(ref, short_latents))
    return (lambda: ref.encode(video).latent_dist.mean), (lambda: ref.encode(short_video))


if __name__ == "__main__":
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", "/tmp/wanvae-inductor")
    main()
