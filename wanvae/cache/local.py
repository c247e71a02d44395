"""The local engine: worker processes decode ahead (prefetch), this process encodes."""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import InvalidStateError, ProcessPoolExecutor

import torch
import torch.multiprocessing as mp

from ..io.weights import load
from .encode import encode_or_error
from .record import CacheRun
from .work import clip_bytes, init_worker, load_clip, may_queue, plan_one


def run_local(run: CacheRun, sources, weights, *, workers: int, tile, device, dtype, compile: bool = False) -> None:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    vae = load(weights, device=device, dtype=dtype, parts="encoder")
    if compile:
        vae.compile()
    pool = None
    try:
        pool = _start_workers(max(1, workers))  # kills what it started if interrupted itself
        todo = []
        for src, jobs, error in pool.map(_plan, [(s, run.opts) for s in sources]):
            todo.extend(run.planned(src, jobs, error))
        most = max(2, workers * 2)  # decoded clips waiting for the encoder, at most (and PREFETCH_BYTES)
        pending: list[tuple] = []  # (future, bytes)
        queued = 0

        def fill() -> None:
            nonlocal queued
            while queued < len(todo) and may_queue([b for _, b in pending], clip_bytes(todo[queued]), most):
                pending.append((pool.submit(load_clip, todo[queued], run.opts.resize, run.opts.alpha), clip_bytes(todo[queued])))
                queued += 1

        fill()
        while pending:
            loaded = pending.pop(0)[0].result()
            fill()
            run.finish(*encode_or_error(vae, loaded, device=device, tile=tile, conditioning=run.opts.conditioning))
    except BaseException:  # Ctrl-C, SIGTERM or a crash
        if pool is not None:
            _kill(pool)
        raise
    pool.shutdown(wait=True)


def _start_workers(workers: int) -> ProcessPoolExecutor:
    """spawn: no forked copy of this process's threads or model; tensors come back through
    shared memory (torch.multiprocessing), not pickled copies.

    The workers never take SIGINT, so a Ctrl-C (sent to the whole process group) reaches
    only this process, which ends them. SIGINT is blocked here while they are launched: a
    blocked signal stays blocked across exec, so a worker is deaf to it even before
    `init_worker` ignores it, while one sent to this process in that moment waits, and is
    raised as soon as the launch is done (ignoring it instead would lose a Ctrl-C).
    """
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    # Workers report every failure as a value (the index records it); their stderr goes to
    # /dev/null, so a worker killed mid-way can print nothing half-done to the terminal.
    saved_stderr = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    pool = None
    try:
        os.dup2(devnull, 2)
        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=init_worker)
        # The executor launches a worker per task while none is idle: launch them all now,
        # under the mask, without waiting for them to boot.
        for _ in range(workers):
            pool.submit(_nothing, 0)
        os.dup2(saved_stderr, 2)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # a Ctrl-C that came meanwhile is raised here
    except BaseException:
        os.dup2(saved_stderr, 2)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        if pool is not None:
            _kill(pool)
        raise
    finally:
        os.close(saved_stderr)
        os.close(devnull)
    return pool


def _kill(pool: ProcessPoolExecutor) -> None:
    """End the workers now. A graceful shutdown can wait forever on a queue lock that a
    dying worker held; a killed worker holds nothing we need, since workers write nothing
    (every output is written by the driver, atomically)."""
    _quiet_pool_thread()
    for process in list(getattr(pool, "_processes", {}).values()):
        process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def _quiet_pool_thread() -> None:
    """The executor's manager thread, finding its workers killed, sets an error on every
    pending future, and raises (a traceback on the way out) on those already cancelled
    (`Executor.map` cancels its futures when interrupted). That error is expected here."""
    previous = threading.excepthook

    def hook(args) -> None:
        if args.exc_type is not None and issubclass(args.exc_type, InvalidStateError):
            return
        previous(args)

    threading.excepthook = hook


def _nothing(_: int) -> None:
    return None


def _plan(args):
    return plan_one(*args)
