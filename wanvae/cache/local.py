"""The local engine: worker processes decode ahead (prefetch), this process encodes."""

from __future__ import annotations

import torch
import torch.multiprocessing as mp

from ..weights import load
from .run import CacheRun, init_worker, load_clip, plan_one


def run_local(run: CacheRun, sources, weights, *, workers: int, tile, device, dtype) -> None:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    vae = load(weights, device=device, dtype=dtype, parts="encoder")
    # spawn: no forked copy of this process's threads or model; tensors come back through
    # shared memory (torch.multiprocessing), not pickled copies.
    ctx = mp.get_context("spawn")
    with ctx.Pool(max(1, workers), initializer=init_worker) as pool:
        todo = []
        for src, jobs, error in pool.imap(_plan, [(s, run.opts) for s in sources]):
            todo.extend(run.planned(src, jobs, error))
        prefetch = max(2, workers * 2)  # decoded clips waiting for the encoder, at most
        pending = [pool.apply_async(load_clip, (job, run.opts.resize)) for job in todo[:prefetch]]
        queued = prefetch
        while pending:
            job, frames, facts, error = pending.pop(0).get()
            if queued < len(todo):
                pending.append(pool.apply_async(load_clip, (todo[queued], run.opts.resize)))
                queued += 1
            latents = None
            if frames is not None:
                try:
                    latents = vae.encode(frames[None].to(device), tile=tile).float().cpu()
                except Exception as e:  # noqa: BLE001 - recorded, the run goes on
                    error = str(e).splitlines()[0]
            run.finish(job, latents, facts, error)


def _plan(args):
    return plan_one(*args)
