"""wanvae against diffusers' AutoencoderKLWan: time, effective GFLOP/s, memory, error.

Both models get the same random weights. Each case runs on both alternately (after a
warm-up) and reports medians; the ratio is diffusers' time over ours. "Effective GFLOP/s"
is the reference's FLOP count (diffusers, counted with torch.utils.flop_counter on meta
tensors) over our time, so work we avoid counts in our favour; "of ceiling" compares it
with a large 3x3x3 conv3d timed in the same run. Peak RSS comes from a fresh process per
implementation and case.

    python bench/bench.py                 # the quick profile (about 30 minutes on 2 cores)
    python bench/bench.py --profile full  # the issue's sizes (hours with diffusers on a CPU)
    python bench/bench.py --profile wan22 # Wan 2.2 beside Wan 2.1, same cases, same run
    python bench/bench.py --device cuda --dtype bfloat16 [--compile]
    bash bench/gpu.sh run                 # the GPU table (81 frames at 1280x720), one budgeted run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import torch

import wanvae
from wanvae.testing import randomize, reference_for


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # encode | image | i2v | decode
    frames: int
    width: int
    height: int
    runs: int = 3
    ref_runs: int | None = None  # fewer for slow reference cases
    warmup: bool = True
    rss: bool = True  # measure peak RSS in fresh processes (one more run of each)
    note: str = ""
    model: str = "wan2.1"  # the preset: both families run the same cases

    @property
    def config(self) -> wanvae.VAEConfig:
        return wanvae.preset(self.model)

    def input(self, dtype, device) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        if self.kind == "decode":
            cfg = self.config
            s = cfg.spatial_ratio
            x = torch.randn(1, cfg.z_dim, self.frames, self.height // s, self.width // s, generator=g)
        elif self.kind == "i2v":
            first = torch.rand(1, 3, 1, self.height, self.width, generator=g) * 2 - 1
            x = torch.cat([first, torch.zeros(1, 3, self.frames - 1, self.height, self.width)], dim=2)
        else:
            x = torch.rand(1, 3, self.frames, self.height, self.width, generator=g) * 2 - 1
        return x.to(device=device, dtype=dtype)


PROFILES = {
    "quick": [
        Case("encode 17f 256x256", "encode", 17, 256, 256),
        Case("encode 1 image 832x480", "image", 1, 832, 480),
        Case("encode 5f 832x480", "encode", 5, 832, 480, runs=2, ref_runs=1, warmup=False, rss=False, note="5 of the target's 17 frames"),
        Case("i2v 33f 448x256", "i2v", 33, 448, 256, runs=2, ref_runs=1, warmup=False, rss=False, note="target: 81f 832x480"),
        Case("i2v 81f 448x256", "i2v", 81, 448, 256, runs=2, ref_runs=1, warmup=False, rss=False, note="target: 81f 832x480"),
        Case("decode 5 latents 32x32", "decode", 5, 256, 256, runs=3, ref_runs=3, warmup=False),
    ],
    "full": [
        Case("encode 17f 256x256", "encode", 17, 256, 256),
        Case("encode 33f 448x256", "encode", 33, 448, 256, ref_runs=2),
        Case("encode 17f 832x480", "encode", 17, 832, 480, runs=2, ref_runs=1, warmup=False),
        Case("encode 1 image 832x480", "image", 1, 832, 480),
        Case("i2v 81f 832x480", "i2v", 81, 832, 480, runs=1, ref_runs=1, warmup=False),
        Case("decode 5 latents 32x32", "decode", 5, 256, 256),
    ],
    # Wan 2.2 beside Wan 2.1 on the same cases: the 2.1 ratio is the yardstick, since the
    # ratio moves with the CPU. 1280x704 is TI2V-5B's size; its image-to-video encodes one image.
    "wan22": [
        Case("2.1 encode 17f 256x256", "encode", 17, 256, 256, runs=2, ref_runs=2, warmup=False, rss=False),
        Case("2.2 encode 17f 256x256", "encode", 17, 256, 256, runs=2, ref_runs=2, warmup=False, rss=False, model="wan2.2"),
        Case("2.1 decode 5 latents to 256x256", "decode", 5, 256, 256, runs=2, ref_runs=2, warmup=False, rss=False),
        Case("2.2 decode 5 latents to 256x256", "decode", 5, 256, 256, runs=2, ref_runs=2, warmup=False, rss=False, model="wan2.2"),
        Case("2.1 encode 1 image 1280x704", "image", 1, 1280, 704, runs=3, ref_runs=2, rss=False),
        Case("2.2 encode 1 image 1280x704", "image", 1, 1280, 704, runs=3, ref_runs=2, rss=False, model="wan2.2"),
    ],
}


def ours_fn(vae: wanvae.WanVAE, case: Case, tile=None):
    if case.kind == "decode":
        return lambda x: vae.decode(x, clamp=False, tile=tile)
    if case.kind == "i2v":
        return lambda x: vae.encode_conditioning(x[:, :, 0], num_frames=case.frames)
    return lambda x: vae.encode_moments(x, tile=tile)[0]


def ref_fn(ref, vae: wanvae.WanVAE, case: Case):
    from wanvae.testing import reference_decode_unclamped

    if case.kind == "decode":
        from wanvae.model.layers import unpatchify

        return lambda x: unpatchify(reference_decode_unclamped(ref, vae.denormalize(x)), vae.config.patch_size)
    if case.kind == "i2v":
        # Our conditioning output is normalised; compare like with like.
        return lambda x: vae.normalize(ref.encode(x).latent_dist.mean)
    return lambda x: ref.encode(x).latent_dist.mean


def reference_flops(case: Case) -> int:
    """FLOPs of diffusers on this case, counted on meta tensors (nothing is computed)."""
    from torch.utils.flop_counter import FlopCounterMode

    from wanvae.testing import reference_decode_unclamped

    with torch.device("meta"):
        vae = wanvae.WanVAE(case.config)
    ref = reference_for_meta(vae)
    x = case.input(torch.float32, "meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        if case.kind == "decode":
            reference_decode_unclamped(ref, x)
        else:
            ref.encode(x)
    return counter.get_total_flops()


def reference_for_meta(vae):
    from diffusers import AutoencoderKLWan

    from wanvae.io.weights import diffusers_config

    kwargs = {k: v for k, v in diffusers_config(vae.config).items() if not k.startswith("_")}
    with torch.device("meta"):
        return AutoencoderKLWan(**kwargs).eval()


def conv_ceiling(device, dtype) -> float:
    """GFLOP/s of one large 3x3x3 conv3d (the physical limit of this model's work), the
    better of PyTorch's default layout and channels-last: our model runs channels-last, and
    on oneDNN that layout is up to 1.6x faster, so the default alone understates the limit."""
    x = torch.randn(1, 96, 6, 128, 128, device=device, dtype=dtype)
    w = torch.randn(96, 96, 3, 3, 3, device=device, dtype=dtype) * 0.03
    flops = 2 * 96 * 96 * 27 * 4 * 128 * 128
    best = float("inf")
    for layout in (torch.contiguous_format, torch.channels_last_3d):
        xl, wl = x.contiguous(memory_format=layout), w.contiguous(memory_format=layout)
        torch.nn.functional.conv3d(xl, wl, padding=(0, 1, 1))
        for _ in range(3):
            sync(device)
            t = time.perf_counter()
            torch.nn.functional.conv3d(xl, wl, padding=(0, 1, 1))
            sync(device)
            best = min(best, time.perf_counter() - t)
    return flops / best / 1e9


def sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, x, device) -> tuple[float, torch.Tensor]:
    sync(device)
    t = time.perf_counter()
    with torch.no_grad():
        y = fn(x)
    sync(device)
    return time.perf_counter() - t, y


def peak_rss_child(impl: str, case_name: str, profile: str, device: str, dtype: str) -> float:
    """Peak RSS (MB) of one run in a fresh process."""
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", impl, case_name, "--profile", profile, "--device", device, "--dtype", dtype],
        capture_output=True, text=True,
    )
    if out.returncode:
        return float("nan")
    return float(out.stdout.strip().splitlines()[-1])


def rss_child(args) -> None:
    case = next(c for c in PROFILES[args.profile] if c.name == args.rss_child[1])
    dtype = getattr(torch, args.dtype)
    vae = randomize(wanvae.WanVAE(case.config), seed=0).to(args.device, dtype)
    if args.rss_child[0] == "diffusers":
        fn = ref_fn(reference_for(vae).to(args.device, dtype), vae, case)
    else:
        fn = ours_fn(vae, case)
    x = case.input(dtype, args.device)
    with torch.no_grad():
        fn(x)
    if args.device.startswith("cuda"):
        print(torch.cuda.max_memory_allocated() / 2**20)
    else:
        from wanvae.testing import peak_rss_mb

        print(peak_rss_mb())


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    p.add_argument("--cases", help="comma-separated case names (default: the whole profile)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--no-rss", action="store_true", help="skip the separate-process memory runs")
    p.add_argument("--compile", action="store_true", help="ours through vae.compile() (the warm-up then counts its compile)")
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rss_child:
        return rss_child(args)
    device, dtype = args.device, getattr(torch, args.dtype)
    cases = PROFILES[args.profile]
    if args.cases:
        wanted = set(args.cases.split(","))
        cases = [c for c in cases if c.name in wanted]
    models: dict[str, tuple] = {}

    def pair(case: Case) -> tuple:
        """Ours and diffusers' with the same random weights, one family in memory at a time."""
        if case.model not in models:
            models.clear()
            vae = randomize(wanvae.WanVAE(case.config), seed=0).to(device, dtype)
            models[case.model] = (vae, reference_for(vae).to(device, dtype))
            if args.compile:
                vae.compile()  # after reference_for, which copies the weights, not the kernels
        return models[case.model]

    ceiling = conv_ceiling(device, dtype)
    print(f"# {machine()}; device {device}, {args.dtype}; conv3d ceiling {ceiling:.0f} GFLOP/s", flush=True)
    rows = []
    for case in cases:
        flops = reference_flops(case)
        vae, ref = pair(case)
        x = case.input(dtype, device)
        ours, theirs = ours_fn(vae, case), ref_fn(ref, vae, case)
        if case.warmup:
            timed(ours, x, device)
            timed(theirs, x, device)
        t_ours, t_ref = [], []
        y_ours = y_ref = None
        for i in range(max(case.runs, case.ref_runs or case.runs)):
            if i < case.runs:
                dt, y_ours = timed(ours, x, device)
                t_ours.append(dt)
            if i < (case.ref_runs or case.runs):
                dt, y_ref = timed(theirs, x, device)
                t_ref.append(dt)
        err = (y_ours.float() - y_ref.float()).abs().max().item()
        so, sr = statistics.median(t_ours), statistics.median(t_ref)
        row = {
            "case": case.name, "tflop": flops / 1e12, "ours_s": so, "diffusers_s": sr, "ratio": sr / so,
            "eff_gflops": flops / so / 1e9, "of_ceiling": flops / so / 1e9 / ceiling, "max_abs_diff": err,
            "runs": f"{len(t_ours)}/{len(t_ref)}", "note": case.note,
        }
        if case.rss and not args.no_rss:
            row["ours_rss_mb"] = peak_rss_child("ours", case.name, args.profile, device, args.dtype)
            row["diffusers_rss_mb"] = peak_rss_child("diffusers", case.name, args.profile, device, args.dtype)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print(f"Measured on {machine()}, {device}, {args.dtype}; conv3d ceiling {ceiling:.0f} GFLOP/s.\n")
    print("| case | ref TFLOP | ours s | diffusers s | speed-up | eff. GFLOP/s | of ceiling | max abs diff | peak RSS ours / diffusers | runs | note |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        rss = f"{r['ours_rss_mb'] / 1024:.2f} / {r['diffusers_rss_mb'] / 1024:.2f} GB" if "ours_rss_mb" in r else "not measured"
        print(f"| {r['case']} | {r['tflop']:.2f} | {r['ours_s']:.1f} | {r['diffusers_s']:.1f} | {r['ratio']:.2f}x | "
              f"{r['eff_gflops']:.0f} | {r['of_ceiling']:.0%} | {r['max_abs_diff']:.1e} | {rss} | {r['runs']} | {r['note']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "device": device, "dtype": args.dtype, "ceiling_gflops": ceiling, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
