"""Package a trained checkpoint as the bundled demo model and write its model card.

    python tools/demo_card.py TRAINED.safetensors [--val /tmp/demo-data/val] \
        [--earlier SITTING.safetensors] --command "wanvae train ..." [--command ...] [--record]
    python tools/demo_card.py --val /tmp/demo-data/val    # the card again, for what is shipped

The sittings before these (their commands, steps, validation PSNR and CPU time) come from
tools/demo-lineage.json, so the card does not depend on training state files surviving
on one machine; `--record` adds the new sittings and commands to it.

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
from wanvae.training import clips, demo, train
from wanvae import metrics

ASSETS = Path(wanvae.__file__).parent / "assets"
LINEAGE = Path(__file__).with_name("demo-lineage.json")


def sitting_record(checkpoint: str) -> dict:
    """What the card needs of one sitting, from the training state beside its checkpoint."""
    state = torch.load(train.state_path(Path(checkpoint)), map_location="cpu", weights_only=True)
    val = [[r["step"], round(r["val_psnr"], 2)] for r in json.loads(state["log"]) if "val_psnr" in r]
    return {"steps": state["step"], "cpu_seconds": round(state["cpu_seconds"]), "val_psnr": val}


def shortfalls(vae: wanvae.WanVAE, names: list[str], held_out: list[torch.Tensor]) -> list[str]:
    """Card lines on where the model loses PSNR on each held-out clip: which frames, and how
    much of the squared error is colour (and of that, wrong hue over whole regions)."""
    lines = []
    for name, clip in zip(names, held_out):
        recon = train.reconstruct(vae, clip)
        frames = metrics.psnr(recon, clip)  # [T]
        share, coarse = metrics.colour_share(recon, clip)
        lines.append(
            f"  - {name}: {float(10 * torch.log10(4 / (recon - clip).pow(2).mean())):.2f} dB over the clip; frames from "
            f"{frames.min():.1f} dB (frame {int(frames.argmin())}) to {frames.max():.1f} dB (frame {int(frames.argmax())}); "
            f"colour {share:.0%} of the squared error, {coarse:.0%} wrong hue over whole regions (17 px windows)."
        )
    return lines


def long_clip_lines(frames: torch.Tensor) -> list[str]:
    """Card lines on how PSNR holds along the long clips, from their per-frame PSNR [N, T]."""
    per_move = "; ".join(
        f"move {seed}: {row[:8].mean():.2f} -> {row[-8:].mean():.2f}" for seed, row in zip(demo.CARD_SEEDS, frames)
    )
    return [
        f"- Long clips (`wanvae.training.demo.long_clips()`: chelsea under the same four camera moves drawn for "
        f"{frames.shape[1]} frames, 256x256): first 8 frames {frames[:, :8].mean():.2f} dB, last 8 "
        f"{frames[:, -8:].mean():.2f} dB (first 8 -> last 8 by move, dB: {per_move}).",
        "  Per frame, mean of the four moves (dB): " + ", ".join(f"{v:.1f}" for v in frames.mean(0)) + ".",
    ]


# Camera moves of the held-out photos' long clips (seeds of camera_clip), drawn apart from the card's.
HELD_OUT_LONG_SEEDS = (1, 2, 3)


def held_out_long_clip_lines(vae: wanvae.WanVAE, photos: list[Path]) -> list[str]:
    """Card lines on how PSNR holds along 49-frame clips of each held-out photo (not only the bundled one)."""
    falls = []
    for photo in photos:
        image = clips.load_image(photo)
        moves = [clips.camera_clip(image, demo.LONG_CLIP_FRAMES, (256, 256), torch.Generator().manual_seed(s))
                 for s in HELD_OUT_LONG_SEEDS]
        frames = train.frame_psnr(vae, moves)
        falls.append(f"{photo.stem} {frames[:, :8].mean():.2f} -> {frames[:, -8:].mean():.2f}")
    return [
        f"- Long clips of each held-out photo (256x256x{demo.LONG_CLIP_FRAMES}, {len(HELD_OUT_LONG_SEEDS)} camera moves each, "
        f"drawn apart from the card's), first 8 frames -> last 8, dB: {'; '.join(falls)}."
    ]


def write_lineage(lineage: dict, path: Path) -> None:
    """As JSON with one sitting per line, so a new sitting is a one-line diff."""
    sittings = ",\n".join("  " + json.dumps(s) for s in lineage["sittings"])
    commands = ",\n".join("  " + json.dumps(c) for c in lineage["commands"])
    head = {k: v for k, v in lineage.items() if k not in ("sittings", "commands")}
    body = json.dumps(head, indent=1)[:-2]
    path.write_text(f'{body},\n "sittings": [\n{sittings}\n ],\n "commands": [\n{commands}\n ]\n}}\n')


def hand_over(commands: list[str], new: list[str]) -> list[str]:
    """`commands` with the shipped name passed on: the earlier sitting that wrote
    `-o demo.safetensors` now writes the file the new sitting starts from (its `--init`), so
    the rebuild commands chain and only the last one writes the shipped name."""
    inits = [c.split(" --init ", 1)[1].split()[0] for c in new if " --init " in c]
    if not inits:
        return commands
    return [c.replace(" -o demo.safetensors ", f" -o {inits[0]} ") for c in commands]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("checkpoint", nargs="?", help="the last sitting's checkpoint; without it, only the card is "
                   "rewritten, for the shipped weights and the lineage as they stand")
    p.add_argument("--val", help="folder of held-out images (the training run's --val)")
    p.add_argument("--command", action="append", default=[], help="a training command, for the card (in order)")
    p.add_argument("--earlier", action="append", default=[], help="checkpoints of this run's earlier sittings, "
                   "after those in the lineage (their CPU time and validation)")
    p.add_argument("--weights", help="the weights to ship when they are not the last sitting's checkpoint (an "
                   "average of sittings' weights, tools/average_weights.py)")
    p.add_argument("--lineage", type=Path, default=LINEAGE, help="the sittings before these (default: %(default)s)")
    p.add_argument("--record", action="store_true", help="add these sittings and commands to the lineage")
    args = p.parse_args()
    if args.checkpoint is None and (args.earlier or args.command or args.record or args.weights):
        p.error("--earlier, --command, --weights and --record describe a new sitting: give its checkpoint")
    lineage = json.loads(args.lineage.read_text())
    out = ASSETS / demo.DEMO_WEIGHTS
    if args.checkpoint is not None:
        lineage["sittings"] += [sitting_record(path) for path in [*args.earlier, args.checkpoint]]
        lineage["commands"] = hand_over(lineage["commands"], args.command) + args.command
        wanvae.save(wanvae.load(args.weights or args.checkpoint).half(), out)
    sittings = lineage["sittings"]
    cpu_seconds = lineage.get("cpu_seconds_unsplit", 0) + sum(s.get("cpu_seconds") or 0 for s in sittings)
    size_mb = out.stat().st_size / 2**20
    assert size_mb <= 8, size_mb
    model = wanvae.demo_model()
    card = train.evaluate(model, demo.card_clips())
    # Drawn once: the card's held-out numbers and its shortfall lines are about the same clips.
    held_out = train.validation_clips(args.val, (256, 256, 17), seed=1) if args.val else []
    val = train.evaluate(model, held_out) if held_out else None
    cfg = model.config

    def reached(sitting: int) -> bool:
        return len(sittings) >= sitting

    def since(sitting: int, *lines: str) -> list[str]:
        """Card lines about a sitting, shown once the lineage has reached it."""
        return list(lines) if reached(sitting) else []

    params = sum(p.numel() for p in model.parameters())
    # The sittings that cut the share of dead-leaves clips (--dead-leaves), and the share after.
    dead_leaves_cuts = [(7, "20%", "seventh"), (14, "10%", "fourteenth"), (15, "5%", "fifteenth")]
    lines = [
        "# wanvae demo model",
        "",
        "A small model of the Wan 2.1 VAE's architecture and latent layout (16 latent channels,",
        "4x temporal and 8x8 spatial compression, causal), narrower: base width "
        f"{cfg.dim} instead of 96, {params / 1e6:.2f} M parameters, stored as fp16 ({size_mb:.1f} MB).",
        "It exists so `wanvae demo` can show the whole job on real content with no download.",
        "**Its latents are not Wan's latents**: do not feed them to a Wan transformer.",
        "",
        "## Data (CC0, public domain, or no known copyright restrictions"
        + ("; two CC BY 2.0 photos from the sixteenth sitting on)" if reached(16) else ")"),
        "",
        "- Photos bundled with scikit-image (licences as listed in `skimage.data`): astronaut, rocket,",
        "  hubble_deep_field, immunohistochemistry, retina, camera, brick, gravel, grass, cell, and",
        "  from the second sitting on clock, coins and text; each filmed by a synthetic camera",
        "  (smooth pan, zoom and roll). Random flips.",
        *since(
            16,
            "- From the sixteenth sitting on, three more colour photos (`tools/demo_data.py`'s `train-16`):",
            "  scikit-learn's china and flower (CC BY 2.0: danielbuechele and vultilion on Flickr, as",
            "  `sklearn/datasets/images/README.txt` says) and matplotlib's grace_hopper (a US Navy photo,",
            "  public domain).",
        ),
        "- Dead-leaves pictures (occluding discs with power-law radii, colours drawn from the",
        "  training photos) filmed the same way, from the second sitting on (35% of clips"
        + "".join(f"; {share} from the {nth}" for sitting, share, nth in dead_leaves_cuts if reached(sitting)) + "): they",
        "  have natural-image statistics and no end.",
        "- Procedurally generated moving scenes (25% of clips in the first sitting, 15% after"
        + (", 5% from the seventh" if reached(7) else "") + ").",
        "- From the third sitting on, half the clips get new colours (`--recolour 0.5`: channels",
        "  shuffled, a duotone of the brightness blended in): 8 of the 13 photos are grey.",
        *since(
            5,
            "- From the fifth sitting on, 60% of clips get colour that varies on its own across the picture",
            "  (`--chroma 0.6`: hue turned, saturation scaled, a smooth random colour field added,",
            "  brightness kept) instead of `--recolour`" + ("; 30% from the eleventh." if reached(11) else "."),
        ),
        *since(
            9,
            "- From the ninth sitting on, photos are filmed in 256x256 frames and training takes a random",
            "  96x96 crop of them (`--view 256x256`), so the camera moves and magnifies as in the held-out",
            "  clips; `--any-scale` and `--magnify` are no longer used.",
        ),
        "- Held out: chelsea (CC0, Stefan van der Walt; shipped as `chelsea.jpg`) and coffee",
        "  (CC0, Rachel Michetti). Neither was seen in training.",
        "",
        "## Training",
        "",
        f"- Config: `{json.dumps({k: v for k, v in cfg.to_dict().items() if k not in ('latents_mean', 'latents_std')})}`",
        "  (latent statistics: Wan 2.1's, so normalisation behaves like the real model's).",
        f"- {len(sittings)} sitting(s), each starting from the last one's weights with a fresh schedule: "
        + ", ".join(f"{st['steps']} steps" for st in sittings)
        + "; AdamW with warm-up and cosine decay; clip sizes, batches and rates in the commands below.",
        *since(
            20,
            "- Clip lengths: trained on 9 frames (sitting 1), 17 (sittings 2-19), "
            + ("49 (sittings 20-22) and 49 and 17 in turn (from the twenty-third on)" if reached(23) else "49 (from the twentieth on)")
            + ";",
            "  checked on 17-frame clips (the card, validation, `wanvae demo`) and 49-frame ones (below).",
        ),
        "- What each sitting fixed: the first trained on 64x64x9 clips whose photos a prefilter bug",
        "  had blurred (shrunk by the square of the zoom, fixed since: its command now draws sharp",
        "  clips; it reached 32 dB on its blurred clips and 18 dB on sharp held-out",
        "  clips) and whose 9 frames never showed the causal state past the third latent frame",
        "  (on one clip, 41 dB for frames 1-9 and 11 dB after). The second used sharp 96x96x17 clips, photos",
        "  also seen near their own pixel scale (`--any-scale`). The third added new colours: the",
        "  model had returned grey for saturated scenes (12 dB on them).",
        *since(
            4,
            "- The fourth added steps on single images (`--images 0.25`): a saturated image still",
            "  came back grey, because a clip's first frame, the path an image takes, is 1/17 of its loss.",
        ),
        *since(
            5,
            "- The fifth fixed colour that does not follow brightness: `--recolour` gives each region",
            "  one line of colours, and the model turned the held-out cat's green eyes and the coffee's",
            "  brown pink (`--chroma`).",
        ),
        *since(
            6,
            "- The sixth added a squared-error term (`--mse 2`) at a lower rate: held-out PSNR is",
            "  squared error, and its largest errors were still colours.",
        ),
        *since(
            7,
            "- The seventh moved clips from synthetic pictures to photos (dead leaves 35% -> 20%,",
            "  procedural 15% -> 5%) and let the camera zoom in past a photo's own pixels (`--magnify 2`):",
            "  the held-out clips show 300-600 px photos in 256 px frames, often magnified, while",
            "  training crops only ever showed photos at their own scale or shrunk, and trained at",
            "  17-18 dB on content denser than the held-out clips' 24 dB. From the sixth sitting's",
            "  weights, 1000 steps each: both changes 23.88 dB held out, `--magnify 2` alone 23.58 dB,",
            "  fewer synthetic pictures alone 23.59 dB, the sixth sitting 23.63 dB.",
        ),
        *since(8, "- The eighth repeated the seventh's recipe with a fresh schedule (another seed): 24.22 dB."),
        *since(
            9,
            "- The ninth filmed photos at the held-out frame size and trained on crops (`--view 256x256`):",
            "  the held-out clips' worst frames were the fast mid-clip ones (21.7 dB on chelsea against",
            "  27 at the ends), and a 96x96 clip filmed whole moves 2.7x fewer pixels per frame than a",
            "  256x256 one. It started from the shipped fp16 weights (the eighth sitting's fp32 weights",
            "  were lost with its machine). 24.53 dB; with `--any-scale --magnify 2` kept as well, 24.49 dB.",
            "  The eighth sitting's recipe alone had gained 0.34 dB, so the view's share of the 0.30 dB",
            "  gained is not separated, and the mid-clip frames stayed at 21.8 dB.",
        ),
        *since(
            10,
            "- The tenth ran the ninth's recipe as one 2400-step schedule at half the peak rate (1e-4),",
            "  from the ninth's fp32 weights: 24.82 dB. On the card's held-out clips it first fell to",
            "  22.89 dB (step 400) and won that back slowly (24.29, 24.31, 24.68, 24.79 at steps 800-2000):",
            "  every fresh schedule's early steps cost this model 0.5-1.6 dB. A 1500-step schedule at",
            "  1.5e-4 stopped at step 1000 had reached only 23.83 dB and was not shipped.",
        ),
        *since(
            11,
            "- The eleventh weighted squared error 5x more (`--mse 10`, so PSNR's own measure outweighs L1)",
            "  and gave a colour shift to 30% of clips instead of 60%, 500 steps at peak rate 5e-5 from the",
            "  tenth's fp32 weights: 24.94 dB. It was the best of five 500-step variants of the tenth's recipe",
            "  from those weights (held-out dB at step 500): lr 3e-5 alone 24.83; `--mse 10` alone 24.77;",
            "  128x128 crops at batch 1 24.84; `--mse 10` with fewer dead leaves and single images (10% each)",
            "  24.90. On six other camera moves of the held-out photos (seeds 100-102) the tenth gave 22.84 dB,",
            "  the variants 22.92-23.06 and the eleventh 23.04, so its gain is real but most of its lead over",
            "  the other variants is the spread between runs. Averaging variants' weights gained nothing more.",
        ),
        *since(
            12,
            "- The twelfth ran the eleventh's recipe again, 700 steps from its fp32 weights (seed 14): 25.02 dB",
            "  (23.06 on the six other camera moves).",
        ),
        *since(
            13,
            "- The thirteenth ran it once more, 500 steps (seed 15): 25.03 dB held out, no better, but 23.20 dB",
            "  on the six other camera moves (+0.14).",
        ),
        *since(
            14,
            "- The fourteenth halved the dead leaves again (20% -> 10% of clips: the held-out error is natural",
            "  photos', and the model trains at 20 dB on denser synthetic content), 1300 steps at 5e-5 from the",
            "  thirteenth's fp32 weights (seed 16): 25.07 dB held out, 23.29 on the six other camera moves.",
            "  A twin run that also weighted colour error over 17-px windows (`--coarse-colour 30`, aimed at",
            "  the hue blotches below) gave 24.94 and 23.17, and left colour's share of the error as it was.",
        ),
        *since(
            15,
            "- The fifteenth halved them once more (5%), 800 steps at 5e-5 (seed 18, 2 threads): 25.09 dB",
            "  held out, 23.32 on the six other camera moves.",
        ),
        *since(
            16,
            "- The sixteenth added three natural colour photos (8 of the 13 were grey; colour was a third of",
            "  the held-out error), 1400 steps at 5e-5 from the fifteenth's fp32 weights (seed 19): 25.19 dB",
            "  held out (chelsea 24.85, coffee 25.53), 23.52 on the six other camera moves. Its twin on the",
            "  old photos, same seed and steps, gave 25.13 (chelsea 25.00, coffee 25.27) and 23.43: the new",
            "  photos helped coffee and the other moves, and cost chelsea a little on the card's four moves of",
            "  it (26.68 dB, against 26.90 for the fifteenth and 26.96 for the twin).",
        ),
        *since(
            17,
            "- The seventeenth ran the sixteenth's recipe as one longer schedule, 2200 steps at 5e-5 from its",
            "  fp32 weights (seed 21, 2 threads): 25.33 dB held out (chelsea 24.97, coffee 25.69), 23.64 on the",
            "  six other camera moves, and the card's four chelsea moves back up to 26.89 dB. A 700-step run of",
            "  the same recipe (seed 20) had gained only 0.03 dB, and averaging the weights of the sixteenth,",
            "  its twin and that run 0.04: the length of the schedule paid, not another fresh start.",
        ),
        *since(
            18,
            "- The eighteenth ran the same recipe as one 4400-step schedule from the seventeenth's fp32",
            "  weights (seed 22, 2 threads), in two stints over two sessions (`--stop-after 1050`, then",
            "  `--resume` with validation every 550 steps; validation leaves the training random state",
            "  alone, so the one command below gives the same weights): 25.43 dB held out (chelsea 24.98,",
            "  coffee 25.87), 23.84 on the six other camera moves (+0.20), the card's four chelsea moves",
            "  26.83 dB (-0.06). Doubling the schedule gained 0.10 dB held out, against 0.14 for the last.",
        ),
        *since(
            19,
            "- The nineteenth ran the recipe once more, 1500 steps from the eighteenth's fp32 weights (seed",
            "  23, 1 thread, beside its twin): 25.49 dB held out (chelsea 25.10, coffee 25.88), 23.91 on the",
            "  six other camera moves, the card's four chelsea moves 26.90 dB. Its twin at half the peak rate",
            "  (2.5e-5), same seed and steps, gave 25.46, 23.88 and 26.84; averaging the weights of the",
            "  seventeenth and eighteenth, or of the eighteenth's step 1050 and its end, gave 25.40.",
        ),
        *since(
            20,
            "- The twentieth and twenty-first trained on 49-frame clips (13 latent frames): every sitting",
            "  before had shown the causal state 17 frames at most, and over the long clips below the",
            "  nineteenth fell from 29.00 dB in the first 8 frames to 14.77 dB in the last 8 (rainbow",
            "  blotches from frame 32). The content is not what gets harder: 9-frame clips cut from frame 40",
            "  of the same clips come back at 28.8-29.2 dB. The twentieth: 900 steps at 5e-5 on 64x64x49",
            "  crops, batch 2, bf16 autocast, from the shipped fp16 weights (seed 30): 28.81 -> 24.43 dB",
            "  (24.43 was 22.01 at step 300), and `wanvae demo` 25.58 dB (the nineteenth: 26.05).",
        ),
        *since(
            21,
            "- The twenty-first: 2000 steps at 5e-5 on 96x96x49 crops, batch 1, bf16 (seed 31), from the",
            "  twentieth's fp32 weights: 29.09 -> 24.72 dB, `wanvae demo` 25.56 dB. The issue asked for the",
            "  last 8 frames within 2 dB of the first 8 and at least 26.05 dB from `wanvae demo`; neither",
            "  is met: the fall along the clip is 4.4 dB instead of 14, and these 2000 steps closed 0.3 dB",
            "  of it. Shipped for the long clips, at 0.5 dB less on the 17-frame demo clip.",
        ),
        *since(
            22,
            "- The twenty-second looked for where the fall comes from. One still picture repeated for 97",
            "  frames: the encoder's latent frames settle by the ninth and stay, while the decoded colour",
            "  keeps drifting (red up, blue down; 28.0 -> 18.5 dB). Latents of frames 28-48 from a fresh",
            "  encoder, decoded after the long clip's first 28 frames, fall as far as the clip's own: the",
            "  decoder. And a 64x64 centre crop falls as far as the whole 256x256 frame, so small crops",
            "  teach it as well. It trained the decoder alone (`--decoder-only`: the latent space kept) on",
            "  64x64x49 crops at 1e-4, chroma 0.5, from the shipped fp16 weights (seed 40): after 300 steps",
            "  28.77 -> 26.75 dB on the long clips (`wanvae demo` 25.26), after 600 29.06 -> 22.14. Step 300",
            "  is kept (`--stop-after 300` rebuilds it).",
        ),
        *since(
            23,
            "- The twenty-third alternated those crops with 96x96x17 ones (`--alternate-clip`, new),",
            "  decoder only, 5e-5, 1 thread (seed 41). At its checkpoints, every 100 steps, the last 8",
            "  frames of the long clips (128x128 centre crops) swung between 1.0 and 4.7 dB below the first 8",
            "  while `wanvae demo` rose from 25.3 to 26.0. Beside it, training the encoder as well (seed 42)",
            "  fell to 6.7 dB below within 100 steps, and 65-frame clips with a moving average of the",
            "  weights (seed 44) held 3.3-3.8 dB below; both were stopped. Its step 1000 is kept.",
        ),
        *since(
            24,
            "- The twenty-fourth went on from there with a moving average of the weights (`--ema 0.99`,",
            "  new: the swings are of single checkpoints) at 3e-5 for 600 steps (seed 45, 1 thread): on the",
            "  long clips 29.60 -> 28.19 dB, `wanvae demo` 26.04 dB, the card's clips 27.14 dB. Shipped as",
            "  its schedule ended, not picked among its checkpoints (the twenty-third's step 1000 was picked,",
            "  on 128x128 crops of the long clips). The fall along the long clips meets the issue's 2 dB;",
            "  `wanvae demo` misses its 26.05 dB by 0.01. Another 300 steps at 2e-5 (seed 46) gave 26.02.",
            "  Not every photo holds as well: on 49-frame clips of the held-out coffee (128x128 centre crops,",
            "  three moves) it falls 2.7 dB from the first 8 frames to the last 8, the twenty-first 1.8.",
        ),
        *since(
            25,
            "- The twenty-fifth trained the encoder alone (`--encoder-only`, new: the decoder kept) on the",
            "  twenty-fourth's recipe at 1e-5 for 400 steps (seed 46, 1 thread): the encoder had last",
            "  trained beside the twenty-first's decoder, and three decoder-only sittings had moved the",
            "  decoder since. Long clips 29.57 -> 28.04 dB, `wanvae demo` 26.05 dB, the card's clips 27.15 dB.",
            "  Its twin at 3e-5 (seed 47) reached 26.09 dB on `wanvae demo` and fell 2.2 dB along the long",
            "  clips. On coffee's long clips (128x128 centre crops, three moves) both still fell 2.6-2.7 dB.",
        ),
        *since(
            26,
            "- The twenty-sixth trained the decoder alone again, on the same recipe with more clips",
            "  recoloured (`--chroma 0.6`: colourful content is what drifted) at 3e-5 for 400 steps (seed 48,",
            "  1 thread): the card's long clips 29.57 -> 28.15 dB, `wanvae demo` 26.09 dB, and on 256x256x49",
            "  clips of the held-out photos (three moves each, the line below) chelsea fell 1.43 dB and",
            "  coffee 2.12 (on 128x128 centre crops coffee fell 1.61: the whole frame is the harder test).",
            "  Its twin with every clip recoloured (`--chroma 1.0`, seed 49) fell 2.9 dB on coffee's crops",
            "  and gave 26.03 dB on `wanvae demo`.",
        ),
        *since(
            27,
            "- The twenty-seventh went on from the twenty-sixth with fewer single-image steps (`--images",
            "  0.1`, so more long clips) for 400 steps at 3e-5 (seed 51): coffee's long clips fell 1.91 dB,",
            "  chelsea's 1.73, the card's 1.75, but `wanvae demo` gave 26.01. Its twin with `--images 0.25`",
            "  at 2e-5 (seed 50): coffee 2.20, `wanvae demo` 26.14. Shipped: the average of the",
            "  twenty-sixth's and twenty-seventh's weights (`tools/average_weights.py`), which lands between",
            "  them on both counts and meets both bars (numbers below). It was picked among five",
            "  (those two, the twin, its average with the twenty-seventh: coffee 2.02, demo 26.08, and this)",
            "  on the same held-out clips the card reports, so those numbers flatter it by that choice.",
        ),
        f"- CPU time: {cpu_seconds / 60:.0f} minutes of process time on 2 cores (AMD EPYC) in all.",
        "- Loss: L1 + 0.2 (1 - SSIM) + 1e-6 KL"
        + (", + 2 MSE from the sixth sitting on" if reached(6) else "")
        + (" (10 MSE from the eleventh)." if reached(11) else "."),
        "",
        "Rebuild it:",
        "",
        "```bash",
        "pip install scikit-image" + (" scikit-learn matplotlib" if reached(16) else "") + " && python tools/demo_data.py /tmp/demo-data",
        *lineage["commands"],
        "python tools/demo_card.py demo.safetensors --val /tmp/demo-data/val",
        "```",
        "",
        "## Measured (fp16 weights, fp32 compute, encode -> decode of the normalised mean)",
        "",
        "- Card clips (`wanvae.training.demo.card_clips()`: chelsea under 4 camera moves, 256x256, 17 frames):",
        f"  PSNR **{card['psnr']:.2f} dB**, SSIM {card['ssim']:.4f}.",
    ]
    if val:
        lines.append(f"- Held-out chelsea and coffee (256x256, 17 frames): PSNR {val['psnr']:.2f} dB, SSIM {val['ssim']:.4f}.")
        lines += [
            "- Where it falls short, on each held-out clip:",
            *shortfalls(model, [p.stem for p in clips.find_media(args.val)[0]], held_out),
            "  Mid-clip is where the camera moves fastest between frames that share a latent frame; frame 0",
            "  is encoded alone, the path an image takes. The colour errors are blotches of wrong hue on",
            "  evenly coloured regions (the cat's fur; the coffee's crema turned from orange towards red).",
        ]
    lines += long_clip_lines(train.frame_psnr(model, demo.long_clips()))
    if args.val:
        lines += held_out_long_clip_lines(model, clips.find_media(args.val)[0])
    lines += [
        "- Trained on clips of up to 49 frames and checked on 17 and 49: past the frames it trained on,",
        "  expect it to fall further. Training continues with `wanvae train ... --resume --steps N`.",
        "",
        "Validation during training (held-out chelsea and coffee, 256x256x17, camera moves drawn from each sitting's seed): "
        + "; ".join(
            f"sitting {n + 1}: "
            + (", ".join(f"step {step} {psnr:.2f} dB" for step, psnr in st["val_psnr"]) or "not checked during training")
            for n, st in enumerate(sittings)
        )
        + ".",
        "",
    ]
    (ASSETS / "demo-model.md").write_text("\n".join(lines))
    if args.record:
        write_lineage(lineage, args.lineage)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
