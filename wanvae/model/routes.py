"""Which kernels run: wanvae's direct oneDNN routes for CPU inference, or PyTorch's own dispatch.

Every conv of the model goes through `conv3d` here, and every activation is kept in one
memory layout (`to_layout`). The oneDNN routes exist only for float32 CPU inference, where
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
import torch.nn.functional as F
from torch import Tensor

from ..coding.state import CHANNELS_LAST

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


_MKLDNN_CONV = getattr(torch, "mkldnn_convolution", None)




def blocked_is_faster(x: Tensor) -> bool:
    """Whether a conv of `x` runs faster from PyTorch's default layout, which oneDNN reorders
    to its blocked one, than from channels-last, counting the two copies between layouts.

    oneDNN's channels-last kernels fall behind at 1024 input channels at any frame size
    (1024 -> 512 at 160x88: 147 against 193 GFLOP/s with the copies; 1024 -> 1024 at 80x44:
    152 against 215) and at 512 on small maps (512 -> 512 at 64x64 inside the Wan 2.2
    decoder: 156 against 221); at 96-384 channels, all of Wan 2.1, channels-last wins or ties
    (96 at 128x128: 225 against 182). AMD EPYC, 2 threads; Wan 2.2's decoder is the model
    with such layers.
    """
    c, hw = x.shape[1], x.shape[3] * x.shape[4]
    return c >= 1024 or (c >= 512 and hw <= 64 * 64)


def to_layout(x: Tensor) -> Tensor:
    """Activations live channels-last ([B, C, T, H, W] stored as B, T, H, W, C): oneDNN's
    native layout, so convs skip their reorders (507 vs 291 GFLOP/s for a 96-channel 3x3x3
    conv at 128x128 here), and the RMS norm reduces over contiguous channels."""
    return x.contiguous(memory_format=CHANNELS_LAST)


def conv3d(x: Tensor, weight: Tensor, bias: Tensor | None, stride=(1, 1, 1), padding=(0, 0, 0)) -> Tensor:
    """F.conv3d, sent straight to oneDNN for float32 CPU inference.

    PyTorch's own dispatch sends convs with a small B*C*T*H (few channels: the RGB input
    conv, narrow configs, thin tiles) to its naive `slow_conv3d`, 5-15x slower here.
    `routes.generic_path()` turns this off (and torch.compile never traces it).
    """
    if (
        _MKLDNN_CONV is not None
        and onednn_routes()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
    ):
        if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last_3d)):
            x = x.contiguous(memory_format=torch.channels_last_3d)
        if blocked_is_faster(x) and not x.is_contiguous():
            y = _MKLDNN_CONV(x.contiguous(), weight, bias, padding, stride, (1, 1, 1), 1)
            return y.contiguous(memory_format=torch.channels_last_3d)
        return _MKLDNN_CONV(x, weight, bias, padding, stride, (1, 1, 1), 1)
    return F.conv3d(x, weight, bias, stride=stride, padding=padding)
