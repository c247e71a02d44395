"""Peak memory and time of wanvae at high resolution: untiled, tiled, streaming.

Each measurement runs in a fresh process (peak RSS is per process; tracemalloc does not
see tensor memory). The full Wan 2.1 architecture with random weights; fp32 CPU.

    python bench/memory.py                       # the issue's cases (about 40 minutes on 2 cores)
    python bench/memory.py encode 5 1280 720 auto all
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import torch

# (what, frames (latent frames for decode), width, height, tile, model): model 'all' is the
# whole VAE, 'half' only the half the job uses (wanvae.load(parts=...), as the CLI does).
DEFAULT = [
    ("encode", 17, 1280, 720, "256", "all"),
    ("encode", 17, 1280, 720, "256", "half"),
    ("encode", 17, 1920, 1080, "256", "half"),
    ("decode", 5, 1280, 720, "256", "half"),
    ("stream", 5, 1280, 720, "256", "half"),
    ("stream", 33, 1280, 720, "256", "half"),
]


def child(kind: str, frames: int, width: int, height: int, tile: str, model: str) -> dict:
    import wanvae
    from wanvae.testing import peak_rss_mb, randomize

    tile_arg = None if tile == "none" else (tile if tile == "auto" else int(tile))
    parts = "all" if model == "all" else ("decoder" if kind == "decode" else "encoder")
    vae = randomize(wanvae.WanVAE(parts=parts), seed=0)
    g = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    extra = {}
    if kind == "encode":
        x = torch.rand(1, 3, frames, height, width, generator=g) * 2 - 1
        vae.encode(x, tile=tile_arg)
    elif kind == "decode":
        z = torch.randn(1, 16, frames, height // 8, width // 8, generator=g)
        vae.decode(z, tile=tile_arg)
    else:  # a stream fed one frame at a time: the clip never exists whole
        stream = wanvae.StreamEncoder(vae, tile=tile_arg, chunk=4)
        for _ in range(frames):
            stream.push(torch.rand(1, 3, 1, height, width, generator=g) * 2 - 1)
        stream.flush()
        extra["state_mb"] = round(stream.state_nbytes / 2**20)
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()
    return {"kind": kind, "frames": frames, "size": f"{width}x{height}", "tile": tile, "model": model, "seconds": round(seconds, 1),
            "peak_rss_mb": round(peak), **extra}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, frames, w, h, tile, model = sys.argv[2:8]
        print(json.dumps(child(kind, int(frames), int(w), int(h), tile, model)))
        return
    runs = [tuple(sys.argv[1:7])] if len(sys.argv) > 6 else DEFAULT
    print("| what | frames | size | tile | model | seconds | peak RSS | stream state |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for kind, frames, w, h, tile, model in runs:
        out = subprocess.run([sys.executable, __file__, "--child", kind, str(frames), str(w), str(h), str(tile), model],
                             capture_output=True, text=True)
        row = f"| {kind} | {frames} | {w}x{h} | {tile} | {model} |"
        if out.returncode:
            print(f"{row} failed: {out.stderr.strip().splitlines()[-1]} | | |", flush=True)
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        state = f"{r['state_mb'] / 1024:.2f} GB" if "state_mb" in r else ""
        print(f"{row} {r['seconds']} | {r['peak_rss_mb'] / 1024:.2f} GB | {state} |", flush=True)


if __name__ == "__main__":
    main()
