"""The Ray engine: the same job on a Ray cluster.

Decoding runs as Ray tasks anywhere in the cluster (inputs must be on storage every node
sees); encoding runs in actors that each hold the model, one per GPU (or per group of
CPUs); the driver keeps the in-flight work bounded, and is the only writer of the output
folder, so a crashed or orphaned actor can never leave a file behind.
"""

from __future__ import annotations

import os

import torch

from .encode import encode_or_error
from .record import CacheRun
from .work import clip_bytes, load_clip, may_queue, plan_one


def _ray():
    try:
        import ray
    except ModuleNotFoundError:
        raise ValueError("--engine ray needs Ray: pip install 'wanvae[ray]'") from None
    return ray


class _Encoder:
    """Holds one model; encodes decoded clips."""

    def __init__(self, weights: str, device: str | None, dtype: str, tile, threads: int, compile: bool = False,
                 conditioning: str | None = None) -> None:
        from ..io.weights import load

        torch.set_num_threads(max(1, threads))
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.vae = load(weights, device=self.device, dtype=getattr(torch, dtype), parts="encoder")
        if compile:
            self.vae.compile()
        self.tile, self.conditioning = tile, conditioning

    def encode(self, item):
        return encode_or_error(self.vae, item, device=self.device, tile=self.tile, conditioning=self.conditioning)


def run_ray(run: CacheRun, sources, weights, *, workers: int, tile, device, dtype, address: str | None, compile: bool = False) -> None:
    ray = _ray()
    started_here = False
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        else:
            ray.init(num_cpus=max(2, workers), include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            started_here = True
    try:
        _drive(ray, run, sources, weights, workers=workers, tile=tile, device=device, dtype=dtype, compile=compile)
    finally:
        if started_here:
            ray.shutdown()


def _drive(ray, run: CacheRun, sources, weights, *, workers, tile, device, dtype, compile: bool = False) -> None:
    plan_task = ray.remote(num_cpus=1)(plan_one)
    load_task = ray.remote(num_cpus=1)(load_clip)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        actors = [ray.remote(num_gpus=1)(_Encoder).remote(str(weights), device, str(dtype).removeprefix("torch."), tile, 4, compile, run.opts.conditioning) for _ in range(gpus)]
    else:
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)) - 1)
        actors = [ray.remote(num_cpus=cpus)(_Encoder).remote(str(weights), device, str(dtype).removeprefix("torch."), tile, cpus, compile, run.opts.conditioning)]
    todo = []
    for src, jobs, error in ray.get([plan_task.remote(s, run.opts) for s in sources]):
        todo.extend(run.planned(src, jobs, error))
    most = max(2, 2 * len(actors))  # clips decoded ahead, at most (and PREFETCH_BYTES)
    loading: list = []
    # A clip counts against the budget from its decoding until its encode finishes: handed to
    # an actor it waits in that actor's queue, and in the object store, until then.
    sizes: dict = {}  # a loading or encoding clip's ref -> its bytes
    queued = 0

    def fill() -> None:
        nonlocal queued
        while queued < len(todo) and may_queue(list(sizes.values()), clip_bytes(todo[queued]), most):
            ref = load_task.remote(todo[queued], run.opts.resize, run.opts.alpha)
            loading.append(ref)
            sizes[ref] = clip_bytes(todo[queued])
            queued += 1

    fill()
    encoding: dict = {}
    turn = 0
    while loading or encoding:
        ready, _ = ray.wait(loading + list(encoding), num_returns=1)
        ref = ready[0]
        if ref in encoding:
            del encoding[ref]
            sizes.pop(ref)
            run.finish(*ray.get(ref))
            fill()
            continue
        loading.remove(ref)
        actor = actors[turn % len(actors)]
        turn += 1
        # Hand the decoded clip's object reference straight to an actor: no trip through here.
        done = actor.encode.remote(ref)
        encoding[done] = True
        sizes[done] = sizes.pop(ref)
