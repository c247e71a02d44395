"""Previews: the TAEHV tiny decoder against wanvae's full Wan 2.1 decoder, one run, and the
tiny decoder's peak memory on a long 480p clip.

Random weights in the published layouts (taew2_1's keys and shapes, the full Wan 2.1 VAE),
fp32, CPU. Speed: 5 latent frames to 17 frames at 832x480, each model in the same process,
timed after a warm-up on a small input. Memory: `wanvae decode` of 21 latent frames (81
frames at 832x480) with the tiny model, in a fresh process, peak RSS from the kernel.

    python bench/taehv.py                 # about 5 minutes on 2 cores

Prints one JSON object with the CPU and the figures.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def _cpu() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def published(path: Path, seed: int = 0) -> Path:
    keys = json.loads((ROOT / "tests" / "data" / "taehv_keys.json").read_text())["taew2_1.pth"]
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in keys:
        t = torch.randn(shape, generator=g)
        state[key] = t / math.sqrt(t[0].numel()) if len(shape) > 1 else 0.05 * t
    torch.save(state, path)
    return path


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    import wanvae
    from wanvae.testing import randomize

    torch.set_grad_enabled(False)
    report = {"cpu": _cpu(), "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        tiny = wanvae.load(published(d / "taew2_1.pth"))
        full = randomize(wanvae.WanVAE(wanvae.preset("wan2.1"), parts="decoder"), seed=0)
        z = torch.randn(1, 16, 5, 60, 104, generator=torch.Generator().manual_seed(1))
        small = z[:, :, :2, :8, :8]
        tiny.decode(small), full.decode(small)  # warm-up: first-call costs out of the timings
        t_tiny = _timed(lambda: tiny.decode(z))
        t_full = _timed(lambda: full.decode(z))
        report["decode_5_latents_832x480"] = {"taew2_1_s": round(t_tiny, 2), "wan21_full_s": round(t_full, 1), "ratio": round(t_full / t_tiny, 1)}
        print(json.dumps(report["decode_5_latents_832x480"]), file=sys.stderr, flush=True)
        # 81 frames at 832x480 through the real command, in a fresh process.
        wanvae.save_latents(d / "long.safetensors", torch.randn(1, 16, 21, 60, 104, generator=torch.Generator().manual_seed(2)), {"fps": "16"})
        script = (
            "import sys, json, wanvae; from wanvae.commands.main import main; "
            "rc = main(['decode', sys.argv[1], '-o', sys.argv[2], '--weights', sys.argv[3], '-q']); "
            "from wanvae.testing import peak_rss_mb; print(json.dumps({'rc': rc, 'peak_mb': peak_rss_mb()}))"
        )
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", script, str(d / "long.safetensors"), str(d / "long.mp4"), str(d / "taew2_1.pth")],
                             capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        report["decode_81_frames_832x480_cli"] = {**result, "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
