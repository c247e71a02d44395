"""The cache job: plan clips, skip finished ones, encode the rest, keep the index whole.

Workers (local processes or Ray tasks) only read and decode (`work`); the encoder runs in
this process (local) or in actors that hold the model (Ray), and only this process writes
into the output folder, each file atomically (`record`). A run killed at any moment leaves
whole files and a whole index; the next run redoes exactly what is missing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from ..io import musubi
from ..io.weights import file_sha256, peek_config
from .local import run_local
from .plan import CacheOptions, find_sources
from .ray_engine import run_ray
from .record import CacheRun, Summary

ENGINES = {"local": run_local, "ray": run_ray}


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
    started = time.monotonic()
    config = peek_config(weights)
    refuse_unreadable(opts, config.z_dim)
    multiple = config.spatial_ratio
    if opts.multiple != multiple:
        opts = replace(opts, multiple=multiple)  # checks sizes against this VAE
    sources = find_sources(source)
    run = CacheRun(Path(out), opts, file_sha256(weights), dtype, progress)
    if engine not in ENGINES:
        raise ValueError(f"--engine must be one of {sorted(ENGINES)}, got {engine!r}")
    options = {"address": ray_address} if engine == "ray" else {}
    ENGINES[engine](run, sources, weights, workers=workers, tile=tile, device=device, dtype=dtype, compile=compile, **options)
    summary = run.close()
    summary.seconds = time.monotonic() - started
    return summary


def refuse_unreadable(opts: CacheOptions, z_dim: int) -> None:
    """Refuse, before any work, what the chosen format's reader could not use."""
    if opts.format == "musubi" and z_dim != musubi.LATENT_CHANNELS:
        raise ValueError(
            f"--format musubi: musubi-tuner's Wan cache holds the Wan 2.1 VAE's {musubi.LATENT_CHANNELS} latent channels "
            f"(Wan 2.1, SkyReels-V2, Wan 2.2 A14B), and this VAE's latents have {z_dim}: use --format wanvae"
        )
    if opts.conditioning and z_dim == 48:
        raise ValueError(
            "--conditioning: Wan 2.2's TI2V-5B needs no conditioning tensor: its image conditioning is the clip's own "
            "first latent frame (latents[:, :1], equal to the first frame encoded alone by causality)"
        )
