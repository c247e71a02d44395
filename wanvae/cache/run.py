"""The cache job: plan clips, skip finished ones, encode the rest, keep the index whole.

Workers (local processes or Ray tasks) only read and decode; the encoder runs in this
process (local) or in actors that hold the model (Ray), and only this process writes into
the output folder, each file atomically. A run killed at any moment leaves whole files
and a whole index; the next run redoes exactly what is missing.
"""

from __future__ import annotations


import ctypes
import functools
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from .. import video
from ..atomic import remove_leftovers
from ..latents import save_latents
from ..pipeline import clip_metadata, sha256_file
from .index import INDEX_NAME, Index, failed_source_row, make_row
from .plan import CacheOptions, Job, Source, find_sources, plan_source, source_stamp


@dataclass
class Summary:
    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def clips_per_hour(self) -> float:
        return 3600 * self.done / self.seconds if self.seconds else 0.0


# ---- work done in workers: no writes --------------------------------------------------------
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
    return sha256_file(path), (info.width, info.height)


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


# ---- the driver ---------------------------------------------------------------------------------
class CacheRun:
    """State shared by the engines: what to do, what is done, and how to record it."""

    def __init__(self, out: Path, opts: CacheOptions, checkpoint_sha256: str, dtype: torch.dtype, progress=None) -> None:
        self.out, self.opts = Path(out), opts
        self.checkpoint_sha256, self.dtype = checkpoint_sha256, dtype
        self.index = Index(self.out)
        self.summary = Summary()
        self.progress = progress
        self.out.mkdir(parents=True, exist_ok=True)
        # A killed run leaves half-written outputs as hidden temporaries; this run redoes their
        # clips, so the temporaries would only pile up beside the finished files.
        for suffix in (".safetensors", Path(INDEX_NAME).suffix):
            remove_leftovers(self.out, suffix)

    def job_key(self, job: Job) -> str:
        # Compositing changes the pixels, so it is part of what the output depends on.
        resize = self.opts.resize if self.opts.alpha == "refuse" else f"{self.opts.resize}+alpha-{self.opts.alpha}"
        return job.key(self.checkpoint_sha256, str(self.dtype), resize, source_stamp(job.source))

    def is_done(self, job: Job) -> dict | None:
        """The metadata of a valid, current output for `job`, or None (missing, partial, stale)."""
        path = self.out / job.output_name
        if not path.exists():
            return None
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                shape = f.get_slice("latents").get_shape()
        except Exception:  # noqa: BLE001 - unreadable: redo it
            return None
        return {**meta, "_shape": shape} if meta.get("cache_key") == self.job_key(job) else None

    def planned(self, src: Source, jobs: list[Job] | None, error: str) -> list[Job]:
        """Record a source's planning result; return its clips still to do."""
        if jobs is None:
            self.summary.failed.append((src.rel, error))
            self.index.put(f"{src.rel}\0plan\0{src.occurrence}", failed_source_row(src.rel, error, src.caption))
            self._tick()
            return []
        todo = []
        for job in jobs:
            self.summary.total += 1
            meta = self.is_done(job)
            if meta is not None:
                self.summary.skipped += 1
                self.index.put(job.output_name, make_row(job, "ok", meta["_shape"]))
            else:
                todo.append(job)
        self._tick()
        return todo

    def finish(self, job: Job, latents: torch.Tensor | None, facts: dict, error: str) -> None:
        if latents is None:
            self.summary.failed.append((f"{job.rel} @ {job.start:g}s", error))
            self.index.put(job.output_name, make_row(job, "failed", error=error))
        else:
            meta = clip_metadata(
                source=Path(job.source).name, source_sha256=facts["sha256"], start=job.start, frames=job.frames,
                fps=facts["fps"], source_size=facts["source_size"], size=job.size, resize="center-crop" if job.crop_only else self.opts.resize,
                frame_policy="error", trimmed=0, padded=0, checkpoint_sha256=self.checkpoint_sha256,
                dtype=self.dtype, sample=False, seed=None, latent_shape=latents.shape[1:],
            )
            meta.update(cache_key=self.job_key(job), caption=job.caption, clip_start_index=str(job.start_index))
            save_latents(self.out / job.output_name, latents, meta)
            self.summary.done += 1
            self.index.put(job.output_name, make_row(job, "ok", latents.shape[1:]))
        self._tick()

    def close(self) -> Summary:
        self.index.flush()
        return self.summary

    def _tick(self) -> None:
        if self.progress:
            self.progress(self.summary)


def run_cache(
    source: str | os.PathLike,
    out: str | os.PathLike,
    weights: str | os.PathLike,
    opts: CacheOptions,
    *,
    engine: str = "local",
    workers: int = 2,
    tile="auto",
    device: str | None = None,
    dtype: torch.dtype = torch.float32,
    progress: Callable[[Summary], None] | None = None,
    ray_address: str | None = None,
    compile: bool = False,
) -> Summary:
    """Encode every clip of `source` into `out`; see the module docstring for the guarantees."""
    from ..weights import file_sha256, peek_config

    started = time.monotonic()
    multiple = peek_config(weights).spatial_ratio
    if opts.multiple != multiple:
        opts = replace(opts, multiple=multiple)  # checks sizes against this VAE
    sources = find_sources(source)
    run = CacheRun(Path(out), opts, file_sha256(weights), dtype, progress)
    if engine == "local":
        from .local import run_local

        run_local(run, sources, weights, workers=workers, tile=tile, device=device, dtype=dtype, compile=compile)
    elif engine == "ray":
        from .ray_engine import run_ray

        run_ray(run, sources, weights, workers=workers, tile=tile, device=device, dtype=dtype, address=ray_address, compile=compile)
    else:
        raise ValueError(f"--engine must be local or ray, got {engine!r}")
    summary = run.close()
    summary.seconds = time.monotonic() - started
    return summary
