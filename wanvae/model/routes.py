"""Which kernels run: wanvae's direct oneDNN routes for CPU inference, or PyTorch's own dispatch.

The oneDNN routes (see `layers.conv3d`) exist only for float32 CPU inference, where
PyTorch's dispatch sends thin convs to a naive kernel. Every other case (CUDA, reduced
precision on the CPU, autograd, and code traced by `torch.compile`, where inductor lowers
the convs itself) takes the generic path. Turning the routes off runs that generic path
on the CPU, so CI can test, on machines without a GPU, the very ops CUDA runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

# WANVAE_GENERIC=1 turns the routes off for a whole process (a test run, a bug report).
_onednn = os.environ.get("WANVAE_GENERIC", "").strip() in ("", "0")


def onednn_routes() -> bool:
    """Whether the direct oneDNN routes may run here (never while torch.compile traces)."""
    return _onednn and not torch.compiler.is_compiling()


def set_onednn_routes(enabled: bool) -> bool:
    """Turn the oneDNN routes on or off for the process; returns the previous setting."""
    global _onednn
    previous, _onednn = _onednn, bool(enabled)
    return previous


@contextmanager
def generic_path() -> Iterator[None]:
    """Within the block, every op goes through PyTorch's own dispatch, as on CUDA."""
    previous = set_onednn_routes(False)
    try:
        yield
    finally:
        set_onednn_routes(previous)
