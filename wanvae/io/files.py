"""Files in, files out: the library calls behind `wanvae encode`, `decode` and `roundtrip`."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import __version__
from . import video
from .labels import label_bar
from .latents import load_latents, metadata_warnings, save_latents
from .weights import file_sha256
from ..model.vae import WanVAE
from ..coding.stream import StreamDecoder, StreamEncoder
from ..coding.tiling import TileArg

Progress = Callable[[int, int], None]  # (frames done, latent frames done)

# Frames handed to the stream per push: small, so a long video never sits in memory.
PUSH_FRAMES = 4


def plan_encode(
    path: str | os.PathLike,
    vae: WanVAE,
    *,
    size: tuple[int, int] | None = None,
    resize: str = "crop",
    max_area: int | None = None,
    start: float = 0.0,
    fps: float | None = None,
    frames: int | None = None,
    frame_policy: str = "error",
    alpha: str = "refuse",
    info: video.VideoInfo | None = None,
) -> tuple[video.VideoInfo, video.FramePlan, tuple[int, int]]:
    """Everything about a file's encode that can fail before any decoding: probe, frames, size."""
    if resize not in video.RESIZE_MODES:
        raise video.MediaError(f"--resize must be one of {', '.join(video.RESIZE_MODES)}, got {resize!r}")
    if alpha not in (*video.ALPHA_POLICIES, video.KEEP_ALPHA):
        raise video.MediaError(f"--alpha must be one of {', '.join(video.ALPHA_POLICIES)}, got {alpha!r}")
    alpha_for(vae, alpha)
    info = info or video.probe(path)
    plan = video.plan_frames(info, start, fps, frames, frame_policy, vae.config.temporal_ratio)
    out_size = video.target_size(info.width, info.height, size, max_area, vae.config.spatial_ratio)
    return info, plan, out_size


def alpha_for(vae: WanVAE, alpha: str) -> str:
    """The alpha policy a model reads with: an RGBA model keeps alpha (and refuses to be told
    to composite it away); an RGB one follows `alpha`."""
    if vae.config.image_channels == 4:
        if alpha in ("black", "white"):
            raise video.MediaError(f"--alpha {alpha}: this RGBA model encodes alpha as it is; --alpha is for RGB models")
        return video.KEEP_ALPHA
    if alpha == video.KEEP_ALPHA:
        raise video.MediaError("alpha 'keep' needs an RGBA (4-channel) model; this one takes RGB: --alpha refuse, black or white")
    return alpha


def encode_file(
    path: str | os.PathLike,
    vae: WanVAE,
    *,
    size: tuple[int, int] | None = None,
    resize: str = "crop",
    max_area: int | None = None,
    start: float = 0.0,
    fps: float | None = None,
    frames: int | None = None,
    frame_policy: str = "error",
    alpha: str = "refuse",
    tile: TileArg = None,
    sample: bool = False,
    seed: int | None = None,
    checkpoint_sha256: str | None = None,
    progress: Progress | None = None,
) -> tuple[Tensor, dict[str, str]]:
    """Encode a video or image file: latents [1, z, t, h, w] and the metadata to store with them.

    The frame count is settled (and a bad one refused) before any decoding starts. Memory
    is the lesser of two: a clip whose frames cost less than a stream's causal state is
    read whole and encoded tile by tile (one tile's state alive at a time); a longer one
    streams through `StreamEncoder` a few frames at a time, so memory stops growing at
    the state's size. The latents agree either way to float rounding.
    """
    info, plan, out_size = plan_encode(
        path, vae, size=size, resize=resize, max_area=max_area, start=start, fps=fps, frames=frames, frame_policy=frame_policy
    )
    resize = video.frame_mode(resize, size, max_area)
    alpha = alpha_for(vae, alpha)
    generator = None
    if sample:
        generator = torch.Generator(device=vae.device)
        generator.manual_seed(0 if seed is None else seed)
    w, h = out_size
    if whole_clip_is_smaller(vae, "encoder", plan.count, h, w):
        clip = torch.empty(1, vae.config.image_channels, plan.count, h, w, dtype=vae.dtype, device=vae.device)
        for i, frame in enumerate(video.read_frames(info, plan, out_size, resize, alpha)):
            clip[0, :, i] = frame
            if progress and (i + 1) % PUSH_FRAMES == 0:
                progress(i + 1, 0)
        t = vae.config.latent_frames(plan.count)
        tiles = (lambda done, total: progress(plan.count, t * done // total)) if progress else None  # noqa: E731
        latents = vae.encode(clip, tile=tile, sample=sample, generator=generator, progress=tiles).float().cpu()
        del clip
        done = plan.count
    else:
        latents, done = _stream_encode(info, plan, out_size, resize, alpha, vae, tile, sample, generator, progress)
    if progress:
        progress(done, latents.shape[2])
    meta = clip_metadata(
        source=Path(path).name,
        source_sha256=file_sha256(path),
        start=plan.start,
        frames=plan.count,
        fps=plan.fps,
        source_size=(info.width, info.height),
        size=out_size,
        resize=resize,
        frame_policy=frame_policy,
        trimmed=plan.trimmed,
        padded=plan.padded,
        checkpoint_sha256=checkpoint_sha256,
        dtype=vae.dtype,
        sample=sample,
        seed=seed,
        latent_shape=latents.shape[1:],
    )
    return latents, meta


def whole_clip_is_smaller(vae: WanVAE, part: str, frames: int, height: int, width: int) -> bool:
    """Whether a whole clip's pixels (fp32) cost less memory than a stream's causal state."""
    return frames * 3 * height * width * 4 <= vae.stream_state_nbytes(part, height, width)


def _stream_encode(info, plan, out_size, resize, alpha, vae, tile, sample, generator, progress) -> tuple[Tensor, int]:
    stream = StreamEncoder(vae, tile=tile, sample=sample, generator=generator)
    outs, batch, done = [], [], 0
    for frame in video.read_frames(info, plan, out_size, resize, alpha):
        batch.append(frame)
        if len(batch) == PUSH_FRAMES:
            outs.append(stream.push(torch.stack(batch, dim=1)[None].to(vae.device)))
            done += len(batch)
            batch = []
            if progress:
                progress(done, stream.latents_out)
    if batch:
        outs.append(stream.push(torch.stack(batch, dim=1)[None].to(vae.device)))
        done += len(batch)
    outs.append(stream.flush())
    return torch.cat(outs, dim=2).float().cpu(), done


def clip_metadata(
    *,
    source: str,
    source_sha256: str,
    start: float,
    frames: int,
    fps: float,
    source_size: tuple[int, int],
    size: tuple[int, int],
    resize: str,
    frame_policy: str,
    trimmed: int,
    padded: int,
    checkpoint_sha256: str | None,
    dtype: torch.dtype,
    sample: bool,
    seed: int | None,
    latent_shape,
) -> dict[str, str]:
    """The string metadata stored with every latents file (by `encode` and `cache` alike)."""
    return {
        "wanvae_version": __version__,
        "source": source,
        "source_sha256": source_sha256,
        "start": f"{start:g}",
        "frames": str(frames),
        "fps": f"{fps:.6g}",
        "source_size": f"{source_size[0]}x{source_size[1]}",
        "size": f"{size[0]}x{size[1]}",
        "resize": resize if tuple(source_size) != tuple(size) else "none",
        "frame_policy": frame_policy,
        "trimmed": str(trimmed),
        "padded": str(padded),
        "checkpoint_sha256": checkpoint_sha256 or "",
        "dtype": str(dtype).removeprefix("torch."),
        "sampled": json.dumps(sample),
        "seed": "" if not sample else str(0 if seed is None else seed),
        "latent_shape": json.dumps(list(latent_shape)),
    }


def decode_latents_to_file(
    latents: Tensor,
    vae: WanVAE,
    out: str | os.PathLike,
    *,
    fps: float | None = None,
    tile: TileArg = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Decode [1, z, t, h, w] latents into an mp4 (or a PNG for one frame).

    As for encoding, memory is the lesser of two: a clip whose decoded frames cost less
    than a stream's causal state (at 1280x704, 6 GB for Wan 2.2's decoder, about 2,000
    frames' worth) is decoded whole, tile by tile, then written; a longer one streams
    frame by frame into the writer, its memory no longer growing with the clip. `fps`
    defaults to the family's (16 for Wan 2.1, 24 for Wan 2.2).
    """
    fps = fps or vae.config.pipeline_fps
    if latents.dim() != 5 or latents.shape[0] != 1:
        raise ValueError(f"decode one clip at a time: latents must be [1, {vae.config.z_dim}, t, h, w], got {tuple(latents.shape)}")
    s = vae.config.decoded_spatial_ratio
    frames, h, w = vae.config.pixel_frames(latents.shape[2]), latents.shape[3] * s, latents.shape[4] * s
    video.check_channels_writable(out, vae.config.image_channels)
    with video.VideoWriter(out, fps, overwrite=overwrite) as writer:
        if whole_clip_is_smaller(vae, "decoder", frames, h, w):
            tiles = (lambda done, total: progress(frames * done // total, latents.shape[2] * done // total)) if progress else None  # noqa: E731
            clip = vae.decode(latents.to(vae.device, vae.dtype), tile=tile, progress=tiles)
            for f in clip[0].unbind(1):
                writer.write(f.float().cpu())
            del clip
        else:
            stream = StreamDecoder(vae, tile=tile)
            for i in range(latents.shape[2]):
                for f in stream.push(latents[:, :, i : i + 1].to(vae.device, vae.dtype))[0].unbind(1):
                    writer.write(f.float().cpu())
                if progress:
                    progress(writer.frames, i + 1)
            for f in stream.flush()[0].unbind(1):
                writer.write(f.float().cpu())
        if progress:
            progress(writer.frames, latents.shape[2])
    return Path(out)


def decode_fps(meta: dict[str, str], config, notes: list[str] | tuple[str, ...] = ()) -> float:
    """The frame rate a decode writes when none is asked for: the one recorded at encode time,
    unless `notes` (from `latents.metadata_warnings`) flagged it, else the family's (16 for
    Wan 2.1, 24 for Wan 2.2)."""
    recorded = None if any("fps" in n for n in notes) else meta.get("fps")
    try:
        return float(recorded) if recorded else float(config.pipeline_fps)
    except ValueError:
        return float(config.pipeline_fps)


def decode_file(path: str | os.PathLike, vae: WanVAE, out: str | os.PathLike, *, fps: float | None = None, **kw: Any) -> Path:
    """Decode a latents file; the frame rate defaults to the one recorded at encode time."""
    latents, meta = load_latents(path)
    if fps is None:
        notes = metadata_warnings(meta, tuple(latents.shape), vae.config.spatial_ratio, vae.config.temporal_ratio)
        fps = decode_fps(meta, vae.config, notes)
    return decode_latents_to_file(latents, vae, out, fps=fps, **kw)


def over_black(rgba: Tensor) -> Tensor:
    """[4, ...] in [-1, 1] -> [3, ...]: the colour composited on black by its alpha."""
    return (rgba[:3] + 1) * (rgba[3:] + 1) / 2 - 1


def write_comparison(out_dir: Path, original, recon, fps: float) -> dict:
    """Side-by-side video and PNG strip (original | reconstruction | difference), and the
    numbers (over every channel, alpha included; the pictures of RGBA show it over black)."""
    from .. import metrics

    out_dir.mkdir(parents=True, exist_ok=True)
    p = metrics.psnr(original, recon)
    s = metrics.ssim(original, recon)
    mse = (original - recon).pow(2).mean()
    if original.shape[0] == 4:  # the numbers count alpha; the pictures show RGB over black
        original, recon = (over_black(v) for v in (original, recon))
    diff = ((original - recon).abs() * 4 - 1).clamp(-1, 1)  # amplified x2 in [0, 1] terms
    side = torch.cat([original, recon, diff], dim=3)  # [3, T, H, 3W]
    with video.VideoWriter(out_dir / "side_by_side.mp4", fps, overwrite=True) as w:
        for f in side.unbind(1):
            w.write(f)
    with video.VideoWriter(out_dir / "reconstruction.mp4", fps, overwrite=True) as w:
        for f in recon.unbind(1):
            w.write(f)
    picks = sorted({0, side.shape[1] // 2, side.shape[1] - 1})
    columns = label_bar(["original", "reconstruction", "difference"], original.shape[-1])
    strip = torch.cat([columns, *(side[:, i] for i in picks)], dim=1)  # the labels, then frames stacked vertically
    with video.VideoWriter(out_dir / "frames.png", 1.0, overwrite=True) as w:
        w.write(strip)
    return {
        "psnr": float(10 * torch.log10(4.0 / mse)),
        "ssim": float(s.mean()),
        "psnr_per_frame": [round(float(v), 3) for v in p],
        "ssim_per_frame": [round(float(v), 5) for v in s],
        "frames_in_strip": picks,
    }


def holds_latents(path: str | os.PathLike) -> bool:
    """Whether `path` is a latents file (a tensor named `latents`), read without loading it:
    what tells `info` a latents file from a checkpoint, and `encode` one from a video."""
    path = Path(path)
    if path.suffix not in (".safetensors", ".pt") or not path.is_file():
        return False
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return "latents" in f.keys()
        except Exception:
            return False
    try:
        obj = torch.load(str(path), map_location="meta", weights_only=True)
    except Exception:
        return False
    return isinstance(obj, dict) and "latents" in obj


__all__ = ["decode_file", "decode_latents_to_file", "encode_file", "load_latents", "plan_encode", "save_latents"]
