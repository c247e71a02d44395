"""What a cache run has done and how it records it: outputs written atomically by the driver
alone, the index kept whole, a clip redone unless its file holds current latents."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..io import musubi
from ..io.atomic import remove_leftovers
from ..io.files import clip_metadata
from ..io.latents import save_latents
from .index import INDEX_NAME, Index, failed_source_row, make_row, read_index
from .plan import CacheOptions, Job, Source, source_stamp


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
        for folder in (self.out, self.out / musubi.VIDEO_FOLDER, self.out / musubi.IMAGE_FOLDER):
            for suffix in (".safetensors", Path(INDEX_NAME).suffix):
                remove_leftovers(folder, suffix)
        self.claimed: dict[str, str] = {}  # output name -> the source (and row) that writes it
        # Clips an earlier run wrote (with other options, or from sources no longer given)
        # are still in the folder: they stay listed, so the index names every file it holds.
        for row in read_index(self.out):
            if row.get("status") == "ok" and row.get("output") and (self.out / row["output"]).is_file():
                self.index.rows[row["output"]] = row

    def job_key(self, job: Job) -> str:
        # Compositing changes the pixels, so it is part of what the output depends on; so do
        # the format, the conditioning and the stored dtype.
        resize = self.opts.resize if self.opts.alpha == "refuse" else f"{self.opts.resize}+alpha-{self.opts.alpha}"
        if self.opts.variant:
            resize = f"{resize}+{self.opts.variant}"
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
                keys = set(f.keys())
                latents = "latents" if self.opts.format == "wanvae" else next(k for k in keys if k.startswith("latents_") and not k.startswith("latents_image_"))
                shape = f.get_slice(latents).get_shape()
        except Exception:  # noqa: BLE001 - unreadable or not this format: redo it
            return None
        return {**meta, "_shape": shape} if meta.get("cache_key") == self.job_key(job) else None

    def planned(self, src: Source, jobs: list[Job] | None, error: str) -> list[Job]:
        """Record a source's planning result; return its clips still to do."""
        if jobs is not None:
            # musubi's names carry the file's stem and nothing of its folder: two sources with
            # one stem would overwrite each other's files. The later one fails, by name.
            who = f"{src.rel} (row {src.occurrence + 1})" if src.occurrence else src.rel
            for job in jobs:
                other = self.claimed.get(job.output_name)
                if other is not None and other != who:
                    jobs, error = None, (f"would write {job.output_name}, as {other} does: musubi-tuner names cache files by "
                                         "the source's file name alone; rename one of them")
                    break
            for job in jobs or ():
                self.claimed[job.output_name] = who
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
                self.index.put(job.output_name, make_row(job, "ok", meta["_shape"], fps=_number(meta.get("fps"))))
            else:
                todo.append(job)
        self._tick()
        return todo

    def finish(self, job: Job, tensors: dict[str, torch.Tensor] | None, facts: dict, error: str) -> None:
        """Record one clip: its tensors (from `encode.encode_clip`) written in the run's format,
        or its failure."""
        if tensors is None:
            self.summary.failed.append((f"{job.rel} @ {job.start:g}s", error))
            self.index.put(job.output_name, make_row(job, "failed", error=error))
            self._tick()
            return
        latents = tensors["latents"]
        meta = clip_metadata(
            source=Path(job.source).name, source_sha256=facts["sha256"], start=job.start, frames=job.frames,
            fps=facts["fps"], source_size=facts["source_size"], size=job.size, resize="center-crop" if job.crop_only else self.opts.resize,
            frame_policy="error", trimmed=0, padded=0, checkpoint_sha256=self.checkpoint_sha256,
            dtype=self.dtype, sample=False, seed=None, latent_shape=latents.shape,
        )
        meta.update(cache_key=self.job_key(job), caption=job.caption, clip_start_index=str(job.start_index))
        if self.opts.conditioning:
            meta.update(conditioning=self.opts.conditioning)
        stored = getattr(torch, self.opts.stored_dtype)
        path = self.out / job.output_name
        if self.opts.format == "musubi":
            path.parent.mkdir(exist_ok=True)
            musubi.write_clip(
                path, latents, source_size=tuple(facts["source_size"]), frame_count=None if job.is_image else job.frames,
                conditioning=tensors.get("conditioning"), mask=tensors.get("conditioning_mask"), dtype=stored,
                extra_metadata={k: str(v) for k, v in meta.items()},
            )
        else:
            extra = {k: tensors[k].to(stored) for k in ("conditioning", "conditioning_mask") if k in tensors}
            save_latents(path, latents.to(stored), meta, extra=extra)
        self.summary.done += 1
        self.index.put(job.output_name, make_row(job, "ok", latents.shape, fps=facts["fps"]))
        self._tick()

    def close(self) -> Summary:
        self.index.flush()
        return self.summary

    def _tick(self) -> None:
        if self.progress:
            self.progress(self.summary)


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None
