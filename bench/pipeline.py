"""The VAE inside diffusers' WanImageToVideoPipeline: ours against diffusers' own, one run.

The full-size Wan 2.1 VAE (random weights, fp32, CPU) under the real pipeline with a tiny
random transformer, text and image encoder, 81 frames at 448x256 (the pipeline's default
length). Each configuration runs in a fresh process, so peaks are its own: the process's
peak RSS is reset before each VAE call (/proc/self/clear_refs) and read after it.

    python bench/pipeline.py                      # about 10 minutes on 2 cores
    python bench/pipeline.py --frames 21 --size 448x256   # a quicker look

Prints one JSON object: per configuration, the pipeline's seconds, the conditioning
encode's and the decode's seconds and peak RSS, and how far each tiled output is from
its untiled twin.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

CONFIGS = [("diffusers", False), ("diffusers", True), ("wanvae", False), ("wanvae", True)]


def _rss_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM (the peak RSS) to the current RSS


def child(which: str, tiled: bool, frames: int, width: int, height: int, out: str) -> dict:
    import wanvae
    from wanvae.testing import randomize, reference_for, tiny_wan_pipeline

    vae = randomize(wanvae.WanVAE(), seed=0)
    model = wanvae.for_diffusers(vae) if which == "wanvae" else reference_for(vae)
    if which != "wanvae":
        del vae
    if tiled:
        model.enable_tiling()  # diffusers' defaults: 256-px tiles, 192-px strides
    pipe = tiny_wan_pipeline("i2v", model)
    rng = np.random.default_rng(0)
    from PIL import Image

    image = Image.fromarray((rng.random((height, width, 3)) * 255).astype("uint8"))
    calls: dict[str, dict] = {}

    def timed(name, fn):
        def run(*args, **kwargs):
            base = _rss_mb("VmRSS")
            _reset_peak()
            started = time.perf_counter()
            result = fn(*args, **kwargs)
            calls[name] = {
                "seconds": round(time.perf_counter() - started, 2),
                "peak_rss_mb": round(_rss_mb("VmHWM")),
                "peak_above_start_mb": round(_rss_mb("VmHWM") - base),
            }
            return result

        return run

    model.encode = timed("encode", model.encode)
    model.decode = timed("decode", model.decode)
    prompt = torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(3))
    started = time.perf_counter()
    with torch.no_grad():
        video = pipe(image=image, prompt_embeds=prompt, guidance_scale=1.0, height=height, width=width, num_frames=frames,
                     num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").frames[0]
    total = time.perf_counter() - started
    np.save(out, video)
    vae_seconds = calls["encode"]["seconds"] + calls["decode"]["seconds"]
    return {"vae": which, "tiled": tiled, "pipeline_seconds": round(total, 2), "vae_share": round(vae_seconds / total, 3), **calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--size", default="448x256", help="W x H")
    parser.add_argument("--child", nargs=3, metavar=("VAE", "TILED", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    if args.child:
        which, tiled, out = args.child
        print(json.dumps(child(which, tiled == "1", args.frames, width, height, out)))
        return
    rows, outputs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for which, tiled in CONFIGS:
            out = os.path.join(tmp, f"{which}-{int(tiled)}.npy")
            cmd = [sys.executable, __file__, "--frames", str(args.frames), "--size", args.size, "--child", which, str(int(tiled)), out]
            result = subprocess.run(cmd, capture_output=True, text=True, check=True)
            row = json.loads(result.stdout.strip().splitlines()[-1])
            rows.append(row)
            outputs[(which, tiled)] = np.load(out)
            print(json.dumps(row), file=sys.stderr)
    for row in rows:
        key = (row["vae"], row["tiled"])
        row["max_abs_vs_diffusers_untiled"] = float(np.abs(outputs[key] - outputs[("diffusers", False)]).max())
        if row["tiled"]:
            row["max_abs_vs_own_untiled"] = float(np.abs(outputs[key] - outputs[(row["vae"], False)]).max())
    by = {(r["vae"], r["tiled"]): r for r in rows}
    summary = {
        "conditioning_encode_speedup": round(by[("diffusers", False)]["encode"]["seconds"] / by[("wanvae", False)]["encode"]["seconds"], 2),
        "decode_speedup_untiled": round(by[("diffusers", False)]["decode"]["seconds"] / by[("wanvae", False)]["decode"]["seconds"], 2),
        "decode_speedup_tiled": round(by[("diffusers", True)]["decode"]["seconds"] / by[("wanvae", True)]["decode"]["seconds"], 2),
        "tiled_decode_peak_mb": {"wanvae": by[("wanvae", True)]["decode"]["peak_rss_mb"], "diffusers": by[("diffusers", True)]["decode"]["peak_rss_mb"]},
    }
    import diffusers

    print(json.dumps({
        "machine": platform.processor() or platform.machine(), "cpu": _cpu_name(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "diffusers": diffusers.__version__, "frames": args.frames, "size": args.size,
        "rows": rows, "summary": summary,
    }, indent=2))


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
