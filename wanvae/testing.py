"""Helpers for tests and benchmarks: random weights at a sane scale, diffusers as the reference.

Not used by the library itself. diffusers is imported only when a reference is asked for.
"""

from __future__ import annotations

import math

import torch

from .model import WanVAE


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    Read from /proc (VmHWM), not getrusage: ru_maxrss survives exec, so a child started
    from a big parent would report the parent's peak instead of its own.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@torch.no_grad()
def randomize(vae: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random with activations near 1: weights ~ N(0, 1/fan_in), gammas
    1 +- 0.2, biases ~ 0.05. The zero-initialised attention `proj` is randomised too, or
    attention would be invisible to a parity check."""
    g = torch.Generator().manual_seed(seed)
    for name, p in vae.named_parameters():
        if name.endswith("gamma"):
            p.copy_(1 + 0.2 * (2 * torch.rand(p.shape, generator=g) - 1))
        elif name.endswith("bias"):
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
    return vae.eval()


def reference_for(vae: WanVAE, device: str | torch.device = "cpu"):
    """diffusers' AutoencoderKLWan with the same weights mapped across."""
    from diffusers import AutoencoderKLWan

    from .weights import diffusers_config, original_to_diffusers

    kwargs = {k: v for k, v in diffusers_config(vae.config).items() if not k.startswith("_")}
    with torch.device(device):
        ref = AutoencoderKLWan(**kwargs).eval()
    ref.load_state_dict({original_to_diffusers(k, vae.config): v for k, v in vae.state_dict().items()}, strict=True)
    return ref


@torch.no_grad()
def reference_decode_unclamped(ref, z_raw: torch.Tensor) -> torch.Tensor:
    """diffusers' own `_decode` loop (one latent frame per call), without its final clamp."""
    ref.clear_cache()
    x = ref.post_quant_conv(z_raw)
    outs = []
    for i in range(z_raw.shape[2]):
        ref._conv_idx = [0]
        outs.append(ref.decoder(x[:, :, i : i + 1], feat_cache=ref._feat_map, feat_idx=ref._conv_idx, first_chunk=i == 0))
    ref.clear_cache()
    return torch.cat(outs, dim=2)
