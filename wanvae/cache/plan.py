"""Which clips a dataset gives: sources from a folder or a manifest, clips per source, names.

Everything here is deterministic: the same sources and options give the same clips with
the same output names, which is what lets a rerun recognise finished work.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..io import musubi, values, video
from ..io.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from ..io.values import plural

MODES = ("head", "uniform", "slide", "full")
# wanvae's own files (one `latents` tensor per clip plus metadata, what `wanvae encode`
# writes), or the files musubi-tuner's Wan trainer reads unchanged (see io/musubi.py).
FORMATS = ("wanvae", "musubi")
# Image-to-video conditioning cached beside each clip's latents: the first frame (Wan's
# I2V), or the first and last frames (FLF2V), encoded with the rest of the clip zeros.
CONDITIONINGS = ("i2v", "flf")
LATENT_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Source:
    """One input file and what its manifest row says about it (None: use the run's option)."""

    path: str
    rel: str  # stable name: relative to the folder, or as written in the manifest
    start: float | None = None
    frames: int | None = None
    fps: float | None = None
    size: tuple[int, int] | None = None
    caption: str = ""
    # The how-many-th earlier row with the same `rel` (0 for the first): rows that repeat a
    # source each get their own clips, outputs and index rows.
    occurrence: int = 0
    error: str = ""  # a manifest row that could not be read: it fails alone, the run goes on


@dataclass(frozen=True)
class CacheOptions:
    frames: int | None = 81
    mode: str = "head"
    clips: int = 1
    stride: int | None = None
    fps: float | None = None
    size: tuple[int, int] | None = None
    buckets: tuple[tuple[int, int], ...] = ()
    resize: str = "crop"
    alpha: str = "refuse"  # transparent pixels: refuse the clip, or composite on black / white
    # The VAE's spatial factor (8 for Wan 2.1, 16 for Wan 2.2): sizes and buckets must be
    # multiples of it; `run_cache` sets it from the checkpoint.
    multiple: int = 8
    format: str = "wanvae"
    conditioning: str | None = None
    # What the files hold. None: the format's own default (fp32 for wanvae's files, bf16 for
    # musubi's, which is what musubi-tuner's own caching writes).
    latent_dtype: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.format not in FORMATS:
            raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.conditioning is not None and self.conditioning not in CONDITIONINGS:
            raise ValueError(f"--conditioning must be one of {', '.join(CONDITIONINGS)}, got {self.conditioning!r}")
        if self.latent_dtype is not None and self.latent_dtype not in LATENT_DTYPES:
            raise ValueError(f"--latent-dtype must be one of {', '.join(LATENT_DTYPES)}, got {self.latent_dtype!r}")
        if self.frames is not None and (self.frames < 1 or (self.frames - 1) % 4):
            raise ValueError(f"--frames must be 1 + 4k (e.g. 17, 49, 81), got {self.frames}")
        if self.mode == "slide" and not self.stride:
            raise ValueError("--mode slide needs --stride S (frames between clip starts)")
        if self.stride is not None and self.stride < 1:
            raise ValueError(f"--stride must be at least 1, got {self.stride}")
        if self.clips < 1:
            raise ValueError(f"--clips must be at least 1, got {self.clips}")
        if self.size and self.buckets:
            raise ValueError("give --size or --buckets, not both")
        m = self.multiple
        for w, h in (*self.buckets, *([self.size] if self.size else [])):
            if w % m or h % m or w <= 0 or h <= 0:
                raise ValueError(f"size {w}x{h}: width and height must be positive multiples of {m} for this VAE")

    @property
    def stored_dtype(self) -> str:
        """The dtype the files hold."""
        return self.latent_dtype or ("bfloat16" if self.format == "musubi" else "float32")

    @property
    def variant(self) -> str:
        """What the files hold beyond the clip itself, for the cache key ('' for the original
        defaults, so caches written before these options existed stay current)."""
        parts = [self.format if self.format != "wanvae" else "", self.conditioning or "",
                 self.stored_dtype if self.stored_dtype != "float32" else ""]
        return "|".join(parts) if any(parts) else ""


@dataclass(frozen=True)
class Job:
    """One clip to encode."""

    source: str  # path to read
    rel: str  # the source's stable name
    start_index: int  # first frame, counted in the (resampled) frame plan
    start: float  # the same in seconds
    frames: int
    fps: float | None  # resampling rate, None for the source's own
    size: tuple[int, int]
    caption: str = ""
    indices: tuple[int, ...] = field(default=(), compare=False, repr=False)  # source frames
    occurrence: int = 0  # the source's Source.occurrence
    crop_only: bool = False  # the size is the one picked for the source: centre-cropped, never resampled
    source_size: tuple[int, int] = (0, 0)  # W x H of the source, before any resizing
    is_image: bool = False
    format: str = "wanvae"  # how the output is named and written (FORMATS)

    @property
    def output_name(self) -> str:
        """The output's path in the cache folder."""
        if self.format == "musubi":
            stem = Path(self.rel).stem
            if self.is_image:
                return musubi.cache_name(stem, self.source_size)
            return musubi.cache_name(stem, self.source_size, self.start_index, self.frames)
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(self.rel).stem)[:60] or "clip"
        digest = hashlib.sha1(self.rel.encode()).hexdigest()[:8]
        rate = f"-{self.fps:g}fps" if self.fps else ""
        again = f"-row{self.occurrence + 1}" if self.occurrence else ""  # first rows keep the names they always had
        return f"{stem}-{digest}-f{self.start_index:06d}-n{self.frames}-{self.size[0]}x{self.size[1]}{rate}{again}.safetensors"

    def key(self, checkpoint_sha256: str, dtype: str, resize: str, source_stamp: str) -> str:
        """Everything the output depends on; a rerun redoes a clip whose key changed."""
        parts = dict(rel=self.rel, start=self.start_index, frames=self.frames, fps=self.fps, size=list(self.size),
                     resize=resize, checkpoint=checkpoint_sha256, dtype=dtype, source=source_stamp)
        if self.occurrence:
            parts.update(occurrence=self.occurrence, caption=self.caption)
        if self.crop_only:
            parts.update(crop_only=True)
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def row(self) -> dict:
        d = asdict(self)
        d.pop("indices")
        return d


def source_stamp(path: str | os.PathLike) -> str:
    """A cheap fingerprint of a source file's content: size and modification time."""
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"


def find_sources(source: str | os.PathLike) -> list[Source]:
    """A folder (searched recursively for videos and images) or a CSV/JSONL manifest."""
    source = Path(source)
    if not source.exists():
        raise ValueError(f"{source}: no such file or folder")
    if source.is_dir():
        found = [
            Source(str(p), str(p.relative_to(source)))
            for p in sorted(source.rglob("*"))
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
        ]
        if not found:
            raise ValueError(f"{source}: no videos or images found")
        return found
    # (line or row number, the row's fields or why it could not be read)
    rows: list[tuple[int, dict | str]] = []
    if source.suffix.lower() == ".csv":
        try:
            with open(source, newline="") as f:
                rows = [(n, dict(row)) for n, row in enumerate(csv.DictReader(f), 2)]  # line 1 is the header
        except (csv.Error, UnicodeDecodeError) as e:
            raise ValueError(f"{source}: not a readable CSV manifest ({e})") from None
    elif source.suffix.lower() in (".jsonl", ".json"):
        for n, line in enumerate(source.read_text(errors="replace").splitlines(), 1):
            if line.strip():
                try:
                    rows.append((n, json.loads(line)))
                except json.JSONDecodeError as e:
                    rows.append((n, f"not a JSON object ({e.msg})"))
    else:
        raise ValueError(f"{source}: a source is a folder or a .csv / .jsonl manifest")
    out, seen = [], {}
    for n, row in rows:
        try:
            if isinstance(row, str):
                raise ValueError(row)
            src = _row_source(row, source.parent)
        except (ValueError, TypeError) as e:
            # Named by its line in the manifest, so the index says which row to fix.
            out.append(Source("", f"{source.name}:{n}", error=f"manifest line {n}: {e}"))
            continue
        occurrence = seen.get(src.rel, 0)
        seen[src.rel] = occurrence + 1
        out.append(replace(src, occurrence=occurrence))
    return out


def _row_source(row, base: Path) -> Source:
    """A manifest row as a Source; ValueError naming the bad field (the same checks as the CLI's)."""
    if not isinstance(row, dict):
        raise ValueError(f"expected an object with a 'path', got {type(row).__name__}")
    if not row.get("path") or not isinstance(row["path"], str):
        raise ValueError("no 'path'")
    path = Path(row["path"])

    def field_of(name: str, parse):
        value = row.get(name)
        if value in (None, ""):
            return None
        try:
            return parse(str(value))
        except argparse.ArgumentTypeError as e:
            raise ValueError(f"{name}: {e}") from None

    return Source(
        str(path if path.is_absolute() else base / path),
        row["path"],
        start=field_of("start", values.seconds),
        frames=field_of("frames", values.frame_count),
        fps=field_of("fps", values.frame_rate),
        size=field_of("size", values.size),
        caption=str(row.get("caption") or ""),
    )


def nearest_bucket(width: int, height: int, buckets: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    """The bucket whose aspect ratio is nearest the source's (in log ratio, so 2:1 and 1:2 are even)."""
    aspect = math.log(width / height)
    return min(buckets, key=lambda b: abs(math.log(b[0] / b[1]) - aspect))


def plan_source(src: Source, opts: CacheOptions) -> list[Job]:
    """The clips of one source. Raises MediaError/ValueError for an unreadable or too short one."""
    info = video.probe(src.path)
    fps = src.fps if src.fps is not None else opts.fps
    start = src.start if src.start is not None else 0.0
    frames = src.frames if src.frames is not None else opts.frames
    if frames is not None and (frames < 1 or (frames - 1) % 4):
        raise video.MediaError(f"frames must be 1 + 4k, got {frames}")
    # Every frame from `start` (resampled to fps), as a plan; clips are windows into it.
    everything = video.plan_frames(info, start=start, fps=fps, ratio=1)  # ratio 1: any count
    available = list(everything.indices)
    if src.size:
        size = video.target_size(info.width, info.height, src.size, multiple=opts.multiple)
    elif opts.buckets:
        size = nearest_bucket(info.width, info.height, opts.buckets)
    else:
        size = video.target_size(info.width, info.height, opts.size, multiple=opts.multiple)
    crop_only = not (src.size or opts.buckets or opts.size)
    m = len(available)
    if opts.mode == "full":
        frames = 1 + 4 * ((m - 1) // 4)
    if frames is None:
        raise ValueError("--frames is needed unless --mode full")
    if m < frames:
        fits = f"--frames {1 + 4 * ((m - 1) // 4)} or fewer, or " if m else ""
        raise video.MediaError(
            f"too short for one clip: {plural(m, 'frame')} from {start:g}s, a clip needs {frames} "
            f"({fits}--mode full for each source's longest 1 + 4k frames)"
        )
    if opts.mode in ("head", "full"):
        starts = [0]
    elif opts.mode == "uniform":
        k = min(opts.clips, m - frames + 1)
        starts = sorted({round(i * (m - frames) / max(1, k - 1)) for i in range(k)}) if k > 1 else [0]
    else:  # slide
        starts = list(range(0, m - frames + 1, opts.stride))

    def seconds(s: int) -> float:
        return start + s / fps if fps is not None else info.seconds(available[s])

    return [
        Job(src.path, src.rel, s, round(seconds(s), 6), frames, fps, size, src.caption, tuple(available[s : s + frames]),
            src.occurrence, crop_only, (info.width, info.height), info.is_image, opts.format)
        for s in starts
    ]


def with_indices(job: Job, indices: tuple[int, ...]) -> Job:
    return replace(job, indices=indices)
