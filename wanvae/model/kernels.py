"""The layers' tensor math as pure functions: what `WanVAE.compile` hands to torch.compile.

The causal state, the tile seams and the time chunks are Python bookkeeping around these
functions (dicts keyed by layer, tile and chunk), so compiling whole step functions would
make dynamo specialise on every tile position and chunk index (a 3x3 grid alone is nine
variants against its default limit of eight, past which it silently runs eager). Each
function here is free of that: tensors in, tensors out, nothing read from a module, so
one compiled graph serves every layer, tile and chunk once dynamo has seen the shapes
vary (it then makes them dynamic). The convolutions between them stay outside, where the
CPU keeps its oneDNN route and CUDA its cuDNN one.

Eager, these are also the reference the in-place fast paths of `layers` must equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

REDUCED = (torch.float16, torch.bfloat16)
# The largest finite float16: an activation past it is inf, and inf / |inf| is NaN.
FLOAT16_MAX = 65504.0


def inverse_norm(xf: Tensor) -> Tensor:  # [B, 1, ...]
    """sqrt(C) / max(|x|, 1e-12) over channels, in xf's dtype (fp32 for reduced inputs).

    F.normalize's x / max(|x|, 1e-12); with channels contiguous (channels-last)
    vector_norm is a fast reduction, 3x less time than squaring into a temporary.
    """
    inv = torch.linalg.vector_norm(xf, 2, dim=1, keepdim=True).clamp_min(1e-12).reciprocal()
    # sym_sqrt keeps a compiled graph general in C (`** 0.5` would specialise it per width);
    # eager it is math.sqrt, the very float `C ** 0.5` gives.
    return inv * torch.sym_sqrt(xf.shape[1])


def norm_input(x: Tensor) -> Tensor:
    """The norm's input in the precision it is computed in: fp32 for fp16 and bf16, as the
    reference does (diffusers runs its RMS norm in fp32 under reduced precision), with
    fp16's infinities clamped to its largest value so an overflowed activation stays
    finite instead of turning its whole pixel into NaN."""
    if x.dtype not in REDUCED:
        return x
    xf = x.float()
    return xf.clamp(-FLOAT16_MAX, FLOAT16_MAX) if x.dtype == torch.float16 else xf


def rms_norm(x: Tensor, gamma: Tensor) -> Tensor:
    """L2 norm over channels, times sqrt(C) and the gain; in fp32 for reduced inputs.

    `gamma` is [C] or the checkpoint's [C, 1, ...]: callers pass `gain(gamma)`, since
    dynamo holds a Parameter's shape static, and a static [C, 1, 1, 1] would specialise
    the whole graph to one width.
    """
    xf = norm_input(x)
    return (xf * inverse_norm(xf)).to(x.dtype) * gamma.view(-1, *([1] * (x.dim() - 2)))


def gain(gamma: Tensor) -> Tensor:
    """A Parameter as a plain tensor view of it (gradients still flow), of dynamic shape under dynamo."""
    return gamma.view(gamma.shape)


def norm_silu(x: Tensor, gamma: Tensor) -> Tensor:
    return F.silu(rms_norm(x, gamma))


def lead_norm_silu(lead: Tensor, x: Tensor, gamma: Tensor) -> Tensor:
    """A causal conv's whole input: its look-back frames, then norm and SiLU of `x`,
    written by one fused kernel when compiled."""
    return torch.cat([lead, norm_silu(x, gamma)], dim=2)


def attend(x: Tensor, gamma: Tensor, qkv_weight: Tensor, qkv_bias: Tensor, proj_weight: Tensor, proj_bias: Tensor) -> Tensor:
    """Single-head self-attention over the H*W positions of each of N frames: [N, C, H, W]."""
    n, c, h, w = x.shape
    qkv = F.conv2d(rms_norm(x, gamma), qkv_weight, qkv_bias)
    # [N, 1, H*W, 3C] with channels contiguous: a view when the conv gave channels-last.
    qkv = qkv.permute(0, 2, 3, 1).reshape(n, 1, h * w, 3 * c).contiguous()
    q, k, v = qkv.chunk(3, dim=-1)  # each [N, 1, H*W, C], in the reference's q, k, v order
    # SDPA's fused (flash) kernels work in blocks, so the (HW x HW) matrix never exists;
    # they need the last dim contiguous, or SDPA silently falls back to materialising it
    # (1.9 GB for one 720p frame).
    y = F.scaled_dot_product_attention(q, k, v)
    return F.conv2d(y.view(n, h, w, c).permute(0, 3, 1, 2), proj_weight, proj_bias)


@dataclass(frozen=True)
class Kernels:
    """One set of the functions above, eager or compiled together with one set of options."""

    norm_silu: Callable[..., Tensor] = norm_silu
    lead_norm_silu: Callable[..., Tensor] = lead_norm_silu
    attend: Callable[..., Tensor] = attend
    compiled: bool = False


EAGER = Kernels()


def compiled_kernels(**options) -> Kernels:
    """The kernels through `torch.compile(fn, **options)` (`mode`, `backend`, `dynamic`, ...)."""
    return Kernels(
        norm_silu=torch.compile(norm_silu, **options),
        lead_norm_silu=torch.compile(lead_norm_silu, **options),
        attend=torch.compile(attend, **options),
        compiled=True,
    )
