"""glibc heap policy for tensor-sized blocks: bounded for tiles and streams, reused for whole clips.

glibc serves large blocks with mmap (returned to the OS on free) only above a threshold
that it raises, after the first large free, to the size of that block (up to 32 MB).

- Tiled and streamed passes (`bound_heap`): activations under 32 MB then come from the
  heap, and tiles of slightly different shapes fragment it: resident memory creeps up
  tile after tile although the live tensors stay the same size. Fixing the threshold at
  256 KB keeps big tensors on mmap. Measured on 5 frames of 1280x720, tile 256, full
  model: peak RSS 3.70 GB with glibc's default, 2.04 GB with the threshold fixed.
- Whole-clip passes (`reuse_heap`): every activation over 32 MB is a fresh mmap whose
  pages the kernel must fault in and zero, on every chunk of every layer: 1.9 M page
  faults and 3.2 s of system time in a 13.8 s encode of 17 frames at 256x256. Within
  the pass, large blocks come from the heap and freed ones are reused; the memory goes
  back to the OS when the pass ends. Full model, 17 frames at 256x256: encode 13.9 ->
  12.5 s, decode of 5 latents at 32x32 23.5 -> 20.8 s; peak RSS +0.45 GB for either
  (blocks of new sizes do not always fit the holes freed ones left), still below
  diffusers' peak on the same job. Trimming after every time chunk kept +0.24 GB of
  that but gave back half the time.

After a reuse, bounded passes trim the heap step by step (`release`). Both are
process-wide (glibc has one policy) and step aside when the user chose one
with MALLOC_MMAP_THRESHOLD_, MALLOC_MMAP_MAX_ or MALLOC_TRIM_THRESHOLD_.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

# mallopt parameter numbers, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4

DEFAULT_THRESHOLD = 256 << 10
# glibc's defaults, and the largest threshold its dynamic rule reaches on 64-bit.
_GLIBC_MMAP_MAX = 65536
_GLIBC_TRIM_THRESHOLD = 128 << 10
_GLIBC_THRESHOLD_MAX = 32 << 20
_USER_POLICY = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")

_bounded = False
_reuse_depth = 0
_heap_grown = False  # a reuse_heap block has run: the heap holds (trimmed) free blocks
# At most one trim per this many seconds: a full-size layer on a tile takes 0.1-1 s (so each
# still gets its trim, as measured below), a small model's layers a few ms, for which
# trimming each (and faulting the pages back in) doubled some tiled tests' time.
RELEASE_INTERVAL = 0.05
# Nor while the heap's free blocks are few: re-faulting trimmed pages costs more than
# holding them (a tiled decode of a tiny model ran 15% slower trimming every layer).
RELEASE_MIN_FREE = 256 << 20
_last_release = 0.0


def _libc():
    """glibc's mallopt/malloc_trim, or None (another OS or C library, or a user policy)."""
    if not sys.platform.startswith("linux") or any(k in os.environ for k in _USER_POLICY):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):  # musl, or no glibc
        return None


def bound_heap(threshold: int = DEFAULT_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold so freed activations go back to the OS.

    Process-wide and idempotent. Does nothing off glibc; when the user chose a policy
    with MALLOC_* variables, leaves it. Returns whether a threshold is now in force.
    """
    global _bounded
    if _bounded:
        return True
    if any(k in os.environ for k in _USER_POLICY):
        _bounded = True
        return True
    libc = _libc()
    if libc is None:
        return False
    _bounded = bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold)))
    return _bounded


@contextmanager
def reuse_heap(enabled: bool = True) -> Iterator[None]:
    """Within the block, large blocks come from the heap and are reused once freed.

    `enabled=False` (tensors not in CPU memory) makes it a no-op.
    On exit mmap is allowed again, at the threshold glibc's own rule would have reached
    (32 MB; 256 KB once `bound_heap` applied) since setting any of these turns that rule
    off, and the heap's free pages go back to the OS (`malloc_trim`).
    """
    global _reuse_depth, _heap_grown
    libc = _libc() if enabled and _reuse_depth == 0 else None
    if libc is not None:
        _heap_grown = True
        libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
        libc.mallopt(M_MMAP_MAX, 0)
    _reuse_depth += 1
    try:
        yield
    finally:
        _reuse_depth -= 1
        if libc is not None:
            libc.mallopt(M_MMAP_MAX, _GLIBC_MMAP_MAX)
            libc.mallopt(M_MMAP_THRESHOLD, DEFAULT_THRESHOLD if _bounded else _GLIBC_THRESHOLD_MAX)
            libc.mallopt(M_TRIM_THRESHOLD, _GLIBC_TRIM_THRESHOLD)
            libc.malloc_trim(0)


def release() -> None:
    """Give the heap's free pages back to the OS, once a `reuse_heap` block has grown it.

    glibc serves a request from a free heap block that fits before it considers mmap,
    whatever the threshold: after a whole-clip pass the heap holds gigabytes of free
    blocks (trimmed, so not resident), and a bounded pass that follows would fault them
    back in block after block and keep them, since its frees go back to the heap and no
    longer to the OS. Every stateful layer calls this as it reads its history (through
    `StepContext.history`): trimming once per step was not enough, since one step's blocks
    of many sizes spread over the free heap. Measured: the full Wan 2.1 tiled decode of 3
    latent frames at 448x256 peaked 2016 MB above its start right after an image-to-video
    conditioning encode, 1917 MB with a trim per step, 1165 MB with one per layer (1151 MB
    in a fresh process), for 56 s against 53 s; 1220 MB with the limits below. A trim takes 0.15-0.3 ms; nothing is done
    inside a reuse block, before one has run, or within RELEASE_INTERVAL of the last trim.
    """
    global _last_release
    if not _heap_grown or _reuse_depth:
        return
    now = time.monotonic()
    if now - _last_release < RELEASE_INTERVAL:
        return  # layers this quick allocate too little between trims to matter
    _last_release = now
    libc = _libc()
    if libc is not None and _free_heap_bytes(libc) >= RELEASE_MIN_FREE:
        libc.malloc_trim(0)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _free_heap_bytes(libc) -> int:
    """Bytes in the heap's free blocks (glibc >= 2.33's mallinfo2); unknown counts as plenty."""
    try:
        info = libc.mallinfo2
    except AttributeError:
        return RELEASE_MIN_FREE
    info.restype = _MallInfo2
    return int(info().fordblks)
