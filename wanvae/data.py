"""Read back what `wanvae cache` wrote: a PyTorch dataset over a cache folder, and a sampler
that batches clips of one shape.

    dataset = wanvae.data.LatentDataset("latents/")
    loader = DataLoader(dataset, batch_sampler=wanvae.data.BucketBatchSampler(dataset, batch_size=4),
                        collate_fn=wanvae.data.collate)

The index (`index.jsonl`) says which clips there are; each file is read with safetensors
(never unpickled). Nothing is skipped quietly: a clip the index lists whose file is missing,
unreadable or not what the index says (another shape: a stale file) is reported by path,
all of them at once, when the dataset is made, and a file that goes bad later fails its
item with its path.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from .cache.index import INDEX_NAME, read_index

TENSORS = ("latents", "conditioning", "conditioning_mask")


class CacheError(ValueError):
    """A cache folder whose index and files disagree; names every file at fault."""


class LatentDataset(Dataset):
    """The clips of a wanvae cache folder (`wanvae cache SOURCE -o FOLDER`, format wanvae).

    Each item is a dict: `latents` [C, t, h, w] (normalised, as cached), `conditioning` and
    `conditioning_mask` when the cache was made with `--conditioning`, `caption`, `metadata`
    (the file's, all strings) and `path`.
    """

    def __init__(self, folder: str | os.PathLike, *, check: bool = True) -> None:
        """`check=False` trusts the index without opening every file's header (a big folder
        on slow storage); items still fail with their path if their file is bad."""
        self.folder = Path(folder)
        if not (self.folder / INDEX_NAME).is_file():
            raise CacheError(f"{self.folder}: no {INDEX_NAME}: not a folder `wanvae cache` wrote")
        self.rows = [row for row in read_index(self.folder) if row.get("status") == "ok"]
        if any(not str(row["output"]).endswith(".safetensors") or row["output"].endswith("_wan.safetensors") for row in self.rows):
            raise CacheError(f"{self.folder}: holds musubi-tuner's format (--format musubi): musubi-tuner reads it, "
                             "LatentDataset reads --format wanvae folders")
        if check:
            self.verify()

    def __len__(self) -> int:
        return len(self.rows)

    def path(self, i: int) -> Path:
        return self.folder / self.rows[i]["output"]

    def shape(self, i: int) -> tuple[int, ...]:
        """The latents' shape [C, t, h, w], from the index (no file is read)."""
        return tuple(self.rows[i]["latent_shape"])

    def verify(self) -> None:
        """Check every listed file against the index (its header only); CacheError naming all bad ones."""
        from safetensors import safe_open

        bad = []
        for i in range(len(self.rows)):
            path = self.path(i)
            try:
                with safe_open(str(path), framework="pt") as f:
                    shape = tuple(f.get_slice("latents").get_shape())
            except FileNotFoundError:
                bad.append(f"{path} (missing)")
                continue
            except Exception as e:  # noqa: BLE001 - any unreadable file is reported, by path
                bad.append(f"{path} (unreadable: {str(e).splitlines()[0] if str(e) else type(e).__name__})")
                continue
            if shape != self.shape(i):
                bad.append(f"{path} (latents {list(shape)}, the index says {list(self.shape(i))}: stale)")
        if bad:
            raise CacheError(f"{len(bad)} of {len(self.rows)} cached clips are bad; rerun `wanvae cache` on the folder: " + "; ".join(bad))

    def __getitem__(self, i: int) -> dict[str, Any]:
        from safetensors import safe_open

        path = self.path(i)
        try:
            with safe_open(str(path), framework="pt") as f:
                item: dict[str, Any] = {name: f.get_tensor(name) for name in TENSORS if name in f.keys()}
                metadata = f.metadata() or {}
        except Exception as e:  # noqa: BLE001
            raise CacheError(f"{path}: unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
        if tuple(item["latents"].shape) != self.shape(i):
            raise CacheError(f"{path}: latents {list(item['latents'].shape)}, the index says {list(self.shape(i))}: stale")
        item.update(caption=self.rows[i].get("caption") or "", metadata=metadata, path=str(path))
        return item


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of item indices whose latents share one shape (so they stack), shuffled with
    `seed` and the epoch (`set_epoch`), the same on every run with the same seed."""

    def __init__(self, dataset: LatentDataset, batch_size: int, *, shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.epoch = 0
        self.buckets: dict[tuple[int, ...], list[int]] = {}
        for i in range(len(dataset)):
            self.buckets.setdefault(dataset.shape(i), []).append(i)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        batches = []
        for shape in sorted(self.buckets):
            items = list(self.buckets[shape])
            if self.shuffle:
                rng.shuffle(items)
            for start in range(0, len(items), self.batch_size):
                batch = items[start : start + self.batch_size]
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append(batch)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the tensors of one bucket's items ([B, C, t, h, w]); lists for the rest."""
    out: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        out[key] = torch.stack(values) if isinstance(values[0], Tensor) else values
    return out
