"""Training and fine-tuning a WanVAE on a folder of videos and images.

Loss: L1 + a structural term (1 - SSIM) + a small KL term, optionally + squared error and
coarse colour error. Checkpoints are in the original key layout with the config in the
metadata; the optimiser, step and random state go beside them (`OUT.trainstate.pt`) so
`--resume` continues exactly.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from .. import metrics
from ..io import weights
from ..io.atomic import atomic_path
from ..coding.state import CausalState, StepContext
from .clips import ClipSampler, camera_clip, procedural_clip
from ..config import VAEConfig
from ..model.vae import WanVAE


@dataclass
class TrainOptions:
    steps: int = 1000
    batch: int = 4
    clip: tuple[int, int, int] = (64, 64, 9)  # W, H, T of training clips
    lr: float = 1e-3
    seed: int = 0
    ssim_weight: float = 0.2
    kl_weight: float = 1e-6
    # Weight of a squared-error term. PSNR is squared error; L1 pulls as hard on a small error
    # as on a large one, and the large ones (wrong colours) are what held-out PSNR lost.
    mse_weight: float = 0.0
    # Weight of the squared colour error averaged over 17-pixel windows (metrics.coarse_colour_error):
    # a third of the demo model's held-out error was colour, half of that hue wrong over whole
    # regions (blotches on even fur), which squared error alone weighs no more than grain. (At 30,
    # 1300 steps from the thirteenth demo sitting, it left that share as it was.)
    coarse_colour_weight: float = 0.0
    val_every: int = 200
    decoder_only: bool = False
    # Train the encoder alone, the decoder kept: after the decoder was fine-tuned alone (for
    # long clips, say), the encoder learns to feed the decoder it now has.
    encoder_only: bool = False
    warmup: int = 50
    # Held-out clips may be bigger than training crops (the demo's card uses 256x256x17).
    val_clip: tuple[int, int, int] | None = None
    # Stop (and checkpoint) early at this step, keeping the schedule of `steps`: a sitting.
    stop_after: int | None = None
    # Shares of the training clips that are procedural scenes and dead-leaves pictures (the
    # rest come from the data folder). Dead leaves are what make a few photos generalise.
    procedural: float = 0.15
    dead_leaves: float = 0.35
    # Photos also seen at their own pixel scale, not only shrunk to fit the crop (see camera_clip).
    any_scale: bool = False
    # With any_scale: how far past an image's own pixels the camera may zoom in (see camera_clip).
    magnify: float = 1.0
    # Photos filmed (videos resized) at this W, H and cropped to `clip` (see ClipSampler).
    view: tuple[int, int] | None = None
    # Share of clips given new colours (see clips.recolour): for data that is mostly grey.
    recolour: float = 0.0
    # Share of clips whose colours move independently of brightness (see clips.shift_chroma):
    # recolour alone taught one hue per region, and colourful held-out photos came back pink.
    chroma: float = 0.0
    # Share of steps that train on single images instead of clips (batch x T of them, about
    # the same work): a clip's first frame, the path an image takes, is 1/T of a clip's loss,
    # and a model trained on clips alone lost the colour of images.
    images: float = 0.0
    # Run the forward pass under bfloat16 autocast; weights, optimizer, loss and validation stay
    # fp32. Convolutions dominate a step, and bf16 ones are ~1.5x faster on a CPU with AVX512-BF16
    # (the demo's machine) and far faster on a GPU.
    bf16: bool = False
    # Every other step trains on clips of this W, H, T instead of `clip`: long clips teach the
    # causal state to hold over many latent frames, and on long clips alone the model lost
    # quality on the short clips most people code (the demo's 17 frames fell 0.5 dB).
    alternate_clip: tuple[int, int, int] | None = None
    # Decay of an exponential moving average of the weights, which checkpoints and validation
    # then use (0: the weights as trained). Fine-tuning fast enough to change how the causal
    # state holds over long clips swings that behaviour from checkpoint to checkpoint (the last
    # frames of a 49-frame clip went 26.8 -> 22.1 dB in 300 steps at 1e-4); the average of the
    # recent weights does not swing with them.
    ema: float = 0.0


DECODER_PARTS = ("decoder.", "conv2.")


def trains(name: str, opts: TrainOptions) -> bool:
    """Whether the parameter `name` is trained under `opts` (the rest stay as they are)."""
    if opts.decoder_only:
        return name.startswith(DECODER_PARTS)
    if opts.encoder_only:
        return not name.startswith(DECODER_PARTS)
    return True


def forward_train(vae: WanVAE, clip: Tensor, g: torch.Generator, decoder_only: bool) -> tuple[Tensor, Tensor, Tensor]:
    """One pass with gradients: (reconstruction, mean, logvar) of clips [B, 3, T, H, W]."""
    ctx_grad = torch.no_grad() if decoder_only else torch.enable_grad()
    with ctx_grad:  # each clip is one step of each part: nothing to carry, nothing kept
        moments = vae.stages("encoder").whole(clip, StepContext(CausalState(), record=False))
        mean, logvar = vae.split_moments(moments.contiguous())
    # Drawn on the CPU generator, whose state a resume restores, whatever the model's device.
    noise = torch.randn(mean.shape, generator=g, dtype=mean.dtype).to(mean.device)
    z = mean + torch.exp(0.5 * logvar) * noise
    recon = vae.stages("decoder").whole(z, StepContext(CausalState(), record=False))
    return recon, mean, logvar


def loss_terms(recon: Tensor, clip: Tensor, mean: Tensor, logvar: Tensor, opts: TrainOptions) -> dict[str, Tensor]:
    l1 = (recon - clip).abs().mean()
    mse = (recon - clip).pow(2).mean()
    b, c, t, h, w = clip.shape
    x = ((recon.transpose(1, 2).reshape(b * t, c, h, w) + 1) / 2).clamp(0, 1)
    y = (clip.transpose(1, 2).reshape(b * t, c, h, w) + 1) / 2
    from pytorch_msssim import ssim

    ssim_loss = 1 - ssim(x, y, data_range=1.0, size_average=True)
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
    total = l1 + opts.mse_weight * mse + opts.ssim_weight * ssim_loss + opts.kl_weight * kl
    terms = {"l1": l1, "mse": mse, "ssim": ssim_loss, "kl": kl}
    if opts.coarse_colour_weight:
        err = (recon - clip).transpose(1, 2).reshape(b * t, c, h, w)
        terms["coarse_colour"] = metrics.coarse_colour_error(err).pow(2).mean()
        total = total + opts.coarse_colour_weight * terms["coarse_colour"]
    return {"loss": total, **terms}


def validation_clips(folder: str | os.PathLike | None, size: tuple[int, int, int], count: int = 4, seed: int = 1234) -> list[Tensor]:
    """Fixed held-out clips: each image of `folder` in camera motion, else procedural scenes."""
    w, h, t = size
    g = torch.Generator().manual_seed(seed)
    if folder is None:
        return [procedural_clip(t, (w, h), g) for _ in range(count)]
    sampler = ClipSampler(folder, procedural=0.0, dead_leaves=0.0)
    clips = [camera_clip(img, t, (w, h), g) for img in sampler.images]
    for path in sampler.videos:
        from .clips import video_clip

        clip = video_clip(path, t, (w, h), g)
        if clip is not None:
            clips.append(clip)
    return clips or [procedural_clip(t, (w, h), g) for _ in range(count)]


@torch.no_grad()
def reconstruct(vae: WanVAE, clip: Tensor) -> Tensor:
    """encode -> decode of one clip [3, T, H, W] (the normalised mean, as inference does), fp32 on the CPU."""
    vae.eval()
    return vae.decode(vae.encode(clip[None].to(vae.device, vae.dtype)))[0].float().cpu()


def evaluate(vae: WanVAE, clips: list[Tensor]) -> dict[str, float]:
    """Mean PSNR and SSIM of encode -> decode (the normalised mean, as inference does)."""
    psnrs, ssims = [], []
    for clip in clips:
        recon = reconstruct(vae, clip)
        mse = (recon - clip).pow(2).mean()
        psnrs.append(float(10 * torch.log10(4.0 / mse)))
        ssims.append(float(metrics.ssim(clip, recon).mean()))
    return {"psnr": sum(psnrs) / len(psnrs), "ssim": sum(ssims) / len(ssims)}


def frame_psnr(vae: WanVAE, clips: list[Tensor]) -> Tensor:
    """PSNR of every frame of encode -> decode, [N, T]: how quality holds along a clip."""
    return torch.stack([metrics.psnr(reconstruct(vae, clip), clip) for clip in clips])


def training_batch(sampler: ClipSampler, opts: TrainOptions, g: torch.Generator, step: int = 0) -> Tensor:
    """Step `step`'s clips [B, 3, T, H, W] (odd steps of `opts.alternate_clip`'s size when one is
    given), or with probability `opts.images` B*T single images."""
    w, h, t = opts.alternate_clip if opts.alternate_clip and step % 2 else opts.clip
    if opts.images and torch.rand((), generator=g).item() < opts.images:
        return torch.stack([sampler.sample(1, (w, h), g) for _ in range(opts.batch * t)])
    return torch.stack([sampler.sample(t, (w, h), g) for _ in range(opts.batch)])


def state_path(out: Path) -> Path:
    return out.with_name(out.name + ".trainstate.pt")


def save_checkpoint(
    vae: WanVAE, opt: torch.optim.Optimizer, step: int, g: torch.Generator, out: Path, log: list[dict], cpu_seconds: float,
    average: WanVAE | None = None,
) -> None:
    """`out` gets the weights to use (the moving average when there is one); the training state
    beside it what a resume needs, the trained weights among them when `out` holds the average."""
    weights.save(average if average is not None else vae, out)
    state = {"step": step, "optimizer": opt.state_dict(), "generator": g.get_state(), "log": json.dumps(log), "cpu_seconds": cpu_seconds}
    if average is not None:
        state["trained"] = vae.state_dict()
    with atomic_path(state_path(out)) as tmp:
        torch.save(state, tmp)


@torch.no_grad()
def update_average(average: WanVAE, vae: WanVAE, decay: float) -> None:
    """average <- decay * average + (1 - decay) * vae, parameter by parameter."""
    for mine, theirs in zip(average.parameters(), vae.parameters()):
        mine.lerp_(theirs, 1.0 - decay)


def train(
    data: str | os.PathLike | None,
    out: str | os.PathLike,
    *,
    config: VAEConfig | None = None,
    init: str | os.PathLike | None = None,
    opts: TrainOptions | None = None,
    val: str | os.PathLike | None = None,
    resume: bool = False,
    progress: Callable[[int, dict], None] | None = None,
    device: str | torch.device = "cpu",
) -> dict:
    """Train (or fine-tune from `init`) and write `out`. Returns the last validation numbers.

    Clips are drawn, and random numbers taken, on the CPU whatever `device` is, so a run's data
    does not depend on where it trains.
    """
    opts = opts or TrainOptions()
    if opts.decoder_only and opts.encoder_only:
        raise ValueError("decoder_only and encoder_only together would train nothing: give one")
    out = Path(out)
    torch.manual_seed(opts.seed)
    g = torch.Generator().manual_seed(opts.seed)
    if resume:
        if not out.exists() or not state_path(out).exists():
            raise ValueError(f"{out}: nothing to resume (no checkpoint and {state_path(out).name} beside it)")
        vae = weights.load(out)
    elif init is not None:
        vae = weights.load(init)
    else:
        vae = WanVAE(config or VAEConfig())
        with torch.no_grad():
            # Start with a narrow posterior (std ~ 0.02): sampling noise of std 1 at step 0
            # drowns the decoder's signal, and the KL weight is too small to shrink it fast.
            vae.conv1.bias[vae.config.z_dim :].fill_(-8.0)
    vae = vae.to(device)
    for n, p in vae.named_parameters():
        p.requires_grad_(trains(n, opts))
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=opts.lr, weight_decay=0.0, betas=(0.9, 0.99))
    step, log, cpu_seconds = 0, [], 0.0
    average = None
    if resume:
        st = torch.load(state_path(out), map_location="cpu", weights_only=True)
        if opts.ema and "trained" not in st:
            raise ValueError(f"{out}: this run kept no moving average (--ema); resume it without one")
        if not opts.ema and "trained" in st:
            raise ValueError(f"{out}: holds a moving average of its weights; resume with the run's --ema")
        if opts.ema:  # `out` holds the average; the weights being trained are in the state
            average = copy.deepcopy(vae)
            vae.load_state_dict(st["trained"])
        opt.load_state_dict(st["optimizer"])
        g.set_state(st["generator"])
        step, log, cpu_seconds = st["step"], json.loads(st["log"]), st["cpu_seconds"]
    if opts.ema and average is None:
        average = copy.deepcopy(vae)
    sampler = ClipSampler(data, procedural=opts.procedural, dead_leaves=opts.dead_leaves, any_scale=opts.any_scale,
                          recolour=opts.recolour, chroma=opts.chroma, magnify=opts.magnify, view=opts.view)
    val_clips = validation_clips(val, opts.val_clip or opts.clip, seed=opts.seed + 1) if val else []
    last = {}
    started = time.process_time()
    end = min(opts.steps, opts.stop_after or opts.steps)
    while step < end:
        vae.train()
        lr = opts.lr * min(1.0, (step + 1) / opts.warmup) * 0.5 * (1 + math.cos(math.pi * step / opts.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        batch = training_batch(sampler, opts, g, step).to(device)
        with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=opts.bf16):
            recon, mean, logvar = forward_train(vae, batch, g, opts.decoder_only)
        # The loss in fp32: squared errors of ~1e-3 are what PSNR measures, below bf16's step.
        recon, mean, logvar = recon.float(), mean.float(), logvar.float()
        terms = loss_terms(recon, batch, mean, logvar, opts)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if average is not None:
            update_average(average, vae, opts.ema)
        step += 1
        with torch.no_grad():
            psnr = float(10 * torch.log10(4.0 / (recon.detach().clamp(-1, 1) - batch).pow(2).mean()))
        last = {"step": step, "loss": terms["loss"].item(), "l1": terms["l1"].item(), "psnr": psnr, "lr": lr}
        if step % opts.val_every == 0 or step == end:
            if val_clips:
                last.update({f"val_{k}": v for k, v in evaluate(average if average is not None else vae, val_clips).items()})
            log.append(last)
            save_checkpoint(vae, opt, step, g, out, log, cpu_seconds + time.process_time() - started, average)
        if progress:
            progress(step, last)
    last["cpu_seconds"] = cpu_seconds + time.process_time() - started
    return last


def options_dict(opts: TrainOptions) -> dict:
    return asdict(opts)
