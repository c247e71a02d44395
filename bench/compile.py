"""Compiled against eager on this CPU, and today's eager against an older commit's, in one run.

Full-size Wan 2.1 with random weights: encode 17 frames at 256x256, and decode 5 latents
to them. Each implementation runs in its own process, alternating, so they share the
machine's state; the compiled one starts from an empty inductor cache, so its first call
counts the whole compile. The old code comes from a git worktree of `--baseline`
(PYTHONPATH points the child at it).

    python bench/compile.py [--baseline 028e940] [--rounds 2] [--json results/compile.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOBS = ("encode", "decode")


def child(impl: str, job: str, runs: int) -> None:
    import torch

    import wanvae
    from wanvae.testing import randomize

    vae = randomize(wanvae.WanVAE(wanvae.VAEConfig()), seed=0).eval()
    g = torch.Generator().manual_seed(0)
    if job == "encode":
        x = torch.rand(1, 3, 17, 256, 256, generator=g) * 2 - 1
        fn = lambda: vae.encode_moments(x)[0]  # noqa: E731
    else:
        x = torch.randn(1, 16, 5, 32, 32, generator=g)
        fn = lambda: vae.decode(x, raw=True, clamp=False)  # noqa: E731
    if impl == "compiled":
        vae.compile()
    times = []
    with torch.no_grad():
        for _ in range(runs + 1):
            t = time.perf_counter()
            y = fn()
            times.append(time.perf_counter() - t)
    print(json.dumps({"first": times[0], "steady": statistics.median(times[1:]), "checksum": y.double().abs().sum().item(), "code": wanvae.__file__}))


def run_child(impl: str, job: str, runs: int, baseline: Path | None) -> dict:
    env = dict(os.environ)
    if impl == "old eager":
        env["PYTHONPATH"] = str(baseline)
    env["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="wanvae-inductor-")  # a cold compile
    code = f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import compile as c; c.child({impl.split()[-1]!r}, {job!r}, {runs})"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd="/")
    if out.returncode:
        raise SystemExit(f"{impl} {job} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", default="028e940", help="the commit whose eager code is the yardstick")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds of every implementation")
    p.add_argument("--runs", type=int, default=2, help="timed runs after the first call, per process")
    p.add_argument("--json")
    args = p.parse_args()
    tree = Path(tempfile.mkdtemp(prefix="wanvae-baseline-")) / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), args.baseline], check=True)
    results: dict[tuple[str, str], list[dict]] = {}
    try:
        for _ in range(args.rounds):
            for job in JOBS:
                for impl in ("old eager", "eager", "compiled"):
                    r = run_child(impl, job, args.runs, tree)
                    results.setdefault((impl, job), []).append(r)
                    print(impl, job, r, flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    rows = []
    for job in JOBS:
        old = statistics.median(r["steady"] for r in results["old eager", job])
        for impl in ("old eager", "eager", "compiled"):
            rs = results[impl, job]
            steady = statistics.median(r["steady"] for r in rs)
            first = statistics.median(r["first"] for r in rs)
            rows.append({"job": job, "impl": impl, "first_call_s": round(first, 2), "steady_s": round(steady, 2),
                         "steady_vs_old_eager": round(old / steady, 3)})
    print("| job | implementation | first call (s, compile included) | steady call (s) | old eager / this |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['job']} | {r['impl']} | {r['first_call_s']} | {r['steady_s']} | {r['steady_vs_old_eager']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
