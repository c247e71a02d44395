"""Qwen-Image's VAE: wanvae against diffusers' AutoencoderKLQwenImage on one image at
Qwen-Image's native 1328x1328, fp32, CPU, one run.

Both hold the same random weights in the published shapes (diffusers' default config, which
is the published one); each side is timed after a warm-up on a small image, in the same
process, alternating, and the means are compared.

    python bench/qwen_image.py              # encode; a few minutes on 2 cores
    python bench/qwen_image.py --decode     # and decode the latents back (slower)

Prints one JSON object with the CPU and the figures.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def _cpu() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _best(fn, repeats: int) -> tuple[float, torch.Tensor]:
    times, out = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return min(times), out


def main() -> None:
    from diffusers import AutoencoderKLQwenImage

    import wanvae
    from wanvae.testing import randomize

    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=1328)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--decode", action="store_true")
    args = parser.parse_args()

    torch.manual_seed(0)
    ref = randomize(AutoencoderKLQwenImage(), seed=0)
    vae = wanvae.load(ref)
    image = torch.rand(1, 3, 1, args.size, args.size) * 2 - 1
    small = image[:, :, :, :64, :64]
    with torch.no_grad():
        ref.encode(small)
        vae.encode_moments(small)
        theirs_s, theirs = _best(lambda: ref.encode(image).latent_dist.mean, args.repeats)
        ours_s, (ours, _) = _best(lambda: vae.encode_moments(image), args.repeats)
    result = {
        "cpu": _cpu(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "size": f"{args.size}x{args.size}",
        "encode_diffusers_s": round(theirs_s, 2),
        "encode_wanvae_s": round(ours_s, 2),
        "encode_speedup": round(theirs_s / ours_s, 2),
        "encode_max_abs_diff": float((ours - theirs).abs().max()),
    }
    if args.decode:
        with torch.no_grad():
            theirs_s, theirs = _best(lambda: ref.decode(ours).sample, 1)
            ours_s, mine = _best(lambda: vae.decode(ours, raw=True), 1)
        result.update(
            decode_diffusers_s=round(theirs_s, 2), decode_wanvae_s=round(ours_s, 2),
            decode_speedup=round(theirs_s / ours_s, 2), decode_max_abs_diff=float((mine - theirs).abs().max()),
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
