"""Peak memory of caching one long 720p clip against encoding it, the real commands.

81 frames at 1280x720, the full Wan 2.1 VAE with random weights, fp32, default tile ('auto'):
`wanvae cache --format musubi` (one worker) and `wanvae encode` on the same clip, each in its
own process, run side by side at one thread each (peak memory does not depend on the other
job; the seconds do). Peak RSS from `/usr/bin/time` (the cache's worker processes included).

    python bench/cache_memory.py            # about an hour of one core each, on 2 cores

Prints one JSON object with the CPU and each command's peak and seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FRAMES, WIDTH, HEIGHT = 81, 1280, 720


def _cpu() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main() -> None:
    import wanvae
    from wanvae.testing import randomize

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import media

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        ckpt = wanvae.save(randomize(wanvae.WanVAE(wanvae.preset("wan2.1")), seed=0), d / "wan21.safetensors")
        src = d / "src"
        src.mkdir()
        media.write_video(src / "long_clip.mp4", FRAMES, WIDTH, HEIGHT)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        jobs = {
            "cache": ["wanvae", "cache", str(src), "-o", str(d / "cache"), "--weights", str(ckpt), "--format", "musubi",
                      "--frames", str(FRAMES), "--workers", "1", "-q"],
            "encode": ["wanvae", "encode", str(src / "long_clip.mp4"), "-o", str(d / "x.safetensors"), "--weights", str(ckpt), "-q"],
        }
        started = time.perf_counter()
        procs = {name: subprocess.Popen(["/usr/bin/time", "-f", "%M %e", *cmd], stderr=subprocess.PIPE, text=True, env=env)
                 for name, cmd in jobs.items()}
        report = {"cpu": _cpu(), "clip": f"{FRAMES} frames at {WIDTH}x{HEIGHT}", "tile": "auto (default)"}
        for name, proc in procs.items():
            _, err = proc.communicate()
            kb, seconds = err.strip().splitlines()[-1].split()
            report[name] = {"rc": proc.returncode, "peak_gib": round(int(kb) / 2**20, 2), "seconds": float(seconds)}
        report["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
