"""The local engine: worker processes decode ahead (prefetch), this process encodes."""

from __future__ import annotations

import signal
from concurrent.futures import ProcessPoolExecutor

import torch
import torch.multiprocessing as mp

from ..weights import load
from .run import CacheRun, init_worker, load_clip, plan_one


def run_local(run: CacheRun, sources, weights, *, workers: int, tile, device, dtype) -> None:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    vae = load(weights, device=device, dtype=dtype, parts="encoder")
    pool = _start_workers(max(1, workers))
    try:
        todo = []
        for src, jobs, error in pool.map(_plan, [(s, run.opts) for s in sources]):
            todo.extend(run.planned(src, jobs, error))
        prefetch = max(2, workers * 2)  # decoded clips waiting for the encoder, at most
        pending = [pool.submit(load_clip, job, run.opts.resize, run.opts.alpha) for job in todo[:prefetch]]
        queued = prefetch
        while pending:
            job, frames, facts, error = pending.pop(0).result()
            if queued < len(todo):
                pending.append(pool.submit(load_clip, todo[queued], run.opts.resize, run.opts.alpha))
                queued += 1
            latents = None
            if frames is not None:
                try:
                    latents = vae.encode(frames[None].to(device), tile=tile).float().cpu()
                except Exception as e:  # noqa: BLE001 - recorded, the run goes on
                    error = str(e).splitlines()[0]
            run.finish(job, latents, facts, error)
    except BaseException:
        # Ctrl-C, SIGTERM or a crash: end the workers now. A graceful shutdown can wait
        # forever on a queue lock that a dying worker held; a killed worker holds nothing
        # we need, since workers write nothing (every output is written here, atomically).
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _start_workers(workers: int) -> ProcessPoolExecutor:
    """spawn: no forked copy of this process's threads or model; tensors come back through
    shared memory (torch.multiprocessing), not pickled copies.

    The workers ignore SIGINT, so a Ctrl-C (sent to the whole process group) reaches only
    this process, which ends them; SIGINT is ignored here while they start, since an
    ignored signal stays ignored across exec and Python then leaves it so in the child,
    even before `init_worker` runs.
    """
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=init_worker)
        # Start every worker now, under the ignored SIGINT (the executor starts them lazily).
        list(pool.map(_nothing, range(workers)))
    finally:
        signal.signal(signal.SIGINT, previous)
    return pool


def _nothing(_: int) -> None:
    return None


def _plan(args):
    return plan_one(*args)
