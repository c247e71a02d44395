"""index.jsonl: one row per clip, rewritten atomically so it is always whole and consistent."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..io.atomic import atomic_path

INDEX_NAME = "index.jsonl"
ROW_KEYS = ("source", "start", "frames", "fps", "size", "latent_shape", "output", "status", "error", "caption")


def make_row(job, status: str, latent_shape=None, error: str = "", fps: float | None = None) -> dict:
    """`fps`: the clip's frame rate as read (the source's own unless resampled), once known."""
    return {
        "source": job.rel,
        "start": job.start,
        "frames": job.frames,
        "fps": fps if fps is not None else job.fps,
        "size": f"{job.size[0]}x{job.size[1]}",
        "latent_shape": list(latent_shape) if latent_shape is not None else None,
        "output": job.output_name if status == "ok" else None,
        "status": status,
        "error": error,
        "caption": job.caption,
    }


def failed_source_row(rel: str, error: str, caption: str = "") -> dict:
    """A source that gave no clip at all (unreadable, too short)."""
    return {"source": rel, "start": None, "frames": None, "fps": None, "size": None, "latent_shape": None,
            "output": None, "status": "failed", "error": error, "caption": caption}


class Index:
    """Rows keyed by clip; `flush()` rewrites the whole file atomically (at most every `every` s)."""

    def __init__(self, folder: Path, every: float = 2.0) -> None:
        self.path = Path(folder) / INDEX_NAME
        self.rows: dict[str, dict] = {}
        self.every = every
        self._last = 0.0

    def put(self, key: str, row: dict) -> None:
        self.rows[key] = row
        if time.monotonic() - self._last >= self.every:
            self.flush()

    def flush(self) -> None:
        with atomic_path(self.path) as tmp:
            with open(tmp, "w") as f:
                for key in sorted(self.rows):
                    f.write(json.dumps(self.rows[key], sort_keys=False) + "\n")
        self._last = time.monotonic()


def read_index(folder: Path) -> list[dict]:
    path = Path(folder) / INDEX_NAME
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
