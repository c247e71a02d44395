"""What the encoder does with one decoded clip, in either engine: its latents and, when asked,
the image-to-video conditioning latents and mask, all on the CPU in fp32 (the file's dtype
is the writer's business). Failures are values, so one bad clip never stops a run."""

from __future__ import annotations

from torch import Tensor

from ..io import musubi


def encode_clip(vae, frames: Tensor, *, device, tile, conditioning: str | None = None) -> dict[str, Tensor]:
    """`frames` [3, T, H, W] in [-1, 1] -> {'latents': [z, t, h, w]} and, with `conditioning`
    ('i2v': the first frame; 'flf': the first and last), 'conditioning' [z, t, h, w] (the
    normalised latents of that frame, or pair, with zeros between: `encode_conditioning`'s
    fast path) and 'conditioning_mask' [4, t, h, w] (Wan's mask: 1 where a frame is given)."""
    x = frames[None].to(device)
    out = {"latents": vae.encode(x, tile=tile)[0].float().cpu()}
    if conditioning is not None:
        # One frame (an image) is its own first and last frame: its conditioning is i2v's.
        last = x[:, :, -1] if conditioning == "flf" and x.shape[2] > 1 else None
        cond = vae.encode_conditioning(x[:, :, 0], last, num_frames=x.shape[2])[0].float().cpu()
        out["conditioning"] = cond
        out["conditioning_mask"] = musubi.conditioning_mask(x.shape[2], tuple(cond.shape[1:]), last=last is not None)
    return out


def encode_or_error(vae, item, *, device, tile, conditioning: str | None = None):
    """(job, tensors or None, facts, error) for a (job, frames or None, facts, error) from `work.load_clip`."""
    job, frames, facts, error = item
    if frames is None:
        return job, None, facts, error
    try:
        return job, encode_clip(vae, frames, device=device, tile=tile, conditioning=conditioning), facts, ""
    except Exception as e:  # noqa: BLE001 - recorded, the run goes on
        return job, None, facts, str(e).splitlines()[0] if str(e) else type(e).__name__
