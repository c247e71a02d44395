"""What the cache's workers do: plan a source's clips and decode one clip's frames. No writes:
only the driver writes into the output folder (see `record`)."""

from __future__ import annotations

import ctypes
import functools
import signal

import torch

from ..io import video
from ..io.weights import file_sha256
from .plan import CacheOptions, Job, Source, plan_source, source_stamp


def _die_with_parent() -> None:
    """Workers end when the driver ends, however it ends (SIGKILL included)."""
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def init_worker() -> None:
    _die_with_parent()
    # The driver handles Ctrl-C for the whole run (and ends the workers): no worker traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)  # decoding and resizing; the cores are the encoder's


def plan_one(src: Source, opts: CacheOptions) -> tuple[Source, list[Job] | None, str]:
    if src.error:
        return src, None, src.error
    try:
        return src, plan_source(src, opts), ""
    except Exception as e:  # noqa: BLE001 - a bad input is recorded and the run goes on
        return src, None, str(e).splitlines()[0] if str(e) else type(e).__name__


@functools.lru_cache(maxsize=64)
def _source_facts(path: str, stamp: str) -> tuple[str, tuple[int, int]]:
    info = video.probe(path)
    return file_sha256(path), (info.width, info.height)


def load_clip(job: Job, resize: str, alpha: str = "refuse") -> tuple[Job, torch.Tensor | None, dict, str]:
    """Decode one clip's frames: [3, T, H, W] in [-1, 1], plus facts for the metadata."""
    try:
        info = video.probe(job.source)
        plan = video.FramePlan(job.indices, job.start, job.fps or info.fps)
        frames = torch.stack(list(video.read_frames(info, plan, job.size, "center-crop" if job.crop_only else resize, alpha)), dim=1)
        digest, source_size = _source_facts(job.source, source_stamp(job.source))
        return job, frames, {"sha256": digest, "source_size": source_size, "fps": plan.fps}, ""
    except Exception as e:  # noqa: BLE001
        return job, None, {}, str(e).splitlines()[0] if str(e) else type(e).__name__


# Decoded clips wait for the encoder up to this many bytes (and at least one always does, so
# the encoder never starves): 81 frames of 720p are 0.9 GB of fp32 pixels a clip, and a queue
# of four of them beside the encode would be most of a tiled pass's memory again.
PREFETCH_BYTES = 1 << 30


def clip_bytes(job: Job) -> int:
    """The decoded clip's size: [3, frames, H, W] in fp32."""
    return job.frames * 3 * job.size[0] * job.size[1] * 4


def may_queue(waiting: list[int], next_bytes: int, most: int, budget: int = PREFETCH_BYTES) -> bool:
    """Whether one more clip of `next_bytes` may be decoded ahead, with `waiting` (their sizes)
    already in the queue: at most `most` clips and `budget` bytes, but always one."""
    return not waiting or (len(waiting) < most and sum(waiting) + next_bytes <= budget)
