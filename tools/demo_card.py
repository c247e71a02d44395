"""Package a trained checkpoint as the bundled demo model and write its model card.

    python tools/demo_card.py TRAINED.safetensors [--val /tmp/demo-data/val]

Stores the weights as fp16 safetensors (wanvae/assets/demo.safetensors, at most 8 MB) and
measures PSNR/SSIM on the card's held-out clips with the fp16 weights loaded as fp32,
exactly what `wanvae.demo_model()` returns.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import wanvae
from wanvae import demo, train

ASSETS = Path(wanvae.__file__).parent / "assets"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("checkpoint")
    p.add_argument("--val", help="folder of held-out images (the training run's --val)")
    p.add_argument("--command", default="", help="the training command, for the card")
    args = p.parse_args()
    vae = wanvae.load(args.checkpoint)
    state = torch.load(train.state_path(Path(args.checkpoint)), map_location="cpu", weights_only=True)
    out = ASSETS / demo.DEMO_WEIGHTS
    wanvae.save(vae.half(), out)
    size_mb = out.stat().st_size / 2**20
    assert size_mb <= 8, size_mb
    model = wanvae.demo_model()
    card = train.evaluate(model, demo.card_clips())
    val = train.evaluate(model, train.validation_clips(args.val, (256, 256, 17), seed=1)) if args.val else None
    log = json.loads(state["log"])
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    lines = [
        "# wanvae demo model",
        "",
        "A small model of the Wan 2.1 VAE's architecture and latent layout (16 latent channels,",
        "4x temporal and 8x8 spatial compression, causal), narrower: base width "
        f"{cfg.dim} instead of 96, {params / 1e6:.2f} M parameters, stored as fp16 ({size_mb:.1f} MB).",
        "It exists so `wanvae demo` can show the whole job on real content with no download.",
        "**Its latents are not Wan's latents**: do not feed them to a Wan transformer.",
        "",
        "## Data (all CC0 or public domain)",
        "",
        "- Training: scikit-image's bundled photos astronaut, rocket, hubble_deep_field,",
        "  immunohistochemistry, retina, camera, brick, gravel, grass, cell (licences as listed",
        "  in `skimage.data`), each filmed by a synthetic camera (smooth pan, zoom and roll),",
        "  plus procedurally generated moving scenes (a quarter of the clips). Random flips.",
        "- Held out: chelsea (CC0, Stefan van der Walt; shipped as `chelsea.jpg`) and coffee",
        "  (CC0, Rachel Michetti). Neither was seen in training.",
        "",
        "## Training",
        "",
        f"- Config: `{json.dumps({k: v for k, v in cfg.to_dict().items() if k not in ('latents_mean', 'latents_std')})}`",
        "  (latent statistics: Wan 2.1's, so normalisation behaves like the real model's).",
        f"- Steps: {state['step']}, batch 4 clips of 64x64x9, AdamW lr 6e-4 with warm-up and cosine decay, seed 0.",
        f"- CPU time: {state['cpu_seconds'] / 60:.0f} minutes of process time on 2 cores (AMD EPYC).",
        "- Loss: L1 + 0.2 (1 - SSIM) + 1e-6 KL.",
        "",
        "Rebuild it:",
        "",
        "```bash",
        "pip install scikit-image && python tools/demo_data.py /tmp/demo-data",
        args.command or "wanvae train /tmp/demo-data/train -o demo.safetensors --config small ...",
        "python tools/demo_card.py demo.safetensors --val /tmp/demo-data/val",
        "```",
        "",
        "## Measured (fp16 weights, fp32 compute, encode -> decode of the normalised mean)",
        "",
        "- Card clips (`wanvae.demo.card_clips()`: chelsea under 4 camera moves, 256x256, 17 frames):",
        f"  PSNR **{card['psnr']:.2f} dB**, SSIM {card['ssim']:.4f}.",
    ]
    if val:
        lines.append(f"- Held-out chelsea and coffee (256x256, 17 frames): PSNR {val['psnr']:.2f} dB, SSIM {val['ssim']:.4f}.")
    lines += [
        "- The issue's target is 26 dB on held-out 256x256 17-frame clips; see the numbers above for",
        "  where this model stands. Training continues with `wanvae train ... --resume --steps N`.",
        "",
        "Validation during training: " + ", ".join(f"step {r['step']}: {r['val_psnr']:.2f} dB" for r in log if "val_psnr" in r) + ".",
        "",
    ]
    (ASSETS / "demo-model.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
