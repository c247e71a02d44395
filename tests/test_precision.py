"""Reduced precision: chosen per part, norms in fp32, fp16 guarded against overflow."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import save_file

import wanvae
from conftest import TINY, random_vae, random_video
from wanvae.model import kernels
from wanvae.commands.common import load_model
from wanvae.commands.main import build_parser
from wanvae.model.layers import RMSNorm
from wanvae.metrics import psnr


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_norm_is_computed_in_float32(dtype):
    """With a unit gain the only reduced-precision step is the final cast: the result is
    the fp32 norm rounded once, whatever the reduction's length (a bf16 sum of squares
    over 384 channels would not be)."""
    x = torch.randn(2, 384, 3, 8, 8).to(dtype)
    norm = RMSNorm(384).to(dtype)
    want = kernels.rms_norm(x.float(), torch.ones(384)).to(dtype)
    assert torch.equal(norm(x), want)
    assert torch.equal(norm.silu(x.clone()), torch.nn.functional.silu(want))
    assert torch.equal(kernels.norm_silu(x, norm.gamma), torch.nn.functional.silu(want))


def test_fp16_overflow_in_a_norms_input_stays_finite():
    x = torch.randn(1, 16, 2, 4, 4).half()
    x[0, 3, 1, 2, 2] = float("inf")  # a conv before it overflowed
    x[0, 5, 0, 1, 1] = -float("inf")
    norm = RMSNorm(16).half()
    for y in (norm(x), norm.silu(x.clone()), kernels.norm_silu(x, norm.gamma)):
        assert torch.isfinite(y).all()
    # The overflowed channel dominates its pixel, as the largest finite value would.
    assert norm(x)[0, 3, 1, 2, 2] > 3.9


def test_each_part_runs_in_its_own_dtype(tmp_path):
    ref = random_vae(TINY, seed=5)
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    vae = wanvae.load(path, encoder_dtype=torch.bfloat16)
    assert vae.part_dtype("encoder") == torch.bfloat16 and vae.part_dtype("decoder") == torch.float32
    x = random_video(1, 9, 32, 32, seed=6)
    z = vae.encode(x)
    assert z.dtype == torch.bfloat16
    y = vae.decode(z)  # bf16 latents into the fp32 decoder: cast to its dtype
    assert y.dtype == torch.float32
    z32 = ref.encode(x)
    assert 0 < (z.float() - z32).abs().max() < 0.1
    assert psnr(y, ref.decode(z32)).min() > 30
    only = wanvae.load(path, parts="decoder", decoder_dtype=torch.float16, encoder_dtype=torch.bfloat16)
    assert only.part_dtype("decoder") == torch.float16 and not hasattr(only, "encoder")


def test_the_cli_sets_each_parts_dtype(tmp_path):
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in random_vae(TINY, seed=5).state_dict().items()}, str(path))
    args = build_parser().parse_args(["decode", "z.safetensors", "--weights", str(path), "--device", "cpu", "--dtype", "bf16", "--encoder-dtype", "fp32"])
    vae, _ = load_model(args)
    assert (vae.part_dtype("encoder"), vae.part_dtype("decoder")) == (torch.float32, torch.bfloat16)
    assert not vae.compiled
    args = build_parser().parse_args(["decode", "z.safetensors", "--weights", str(path), "--device", "cpu", "--compile"])
    assert load_model(args)[0].compiled


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_both_families_run_in_reduced_precision_on_the_cpu(dtype):
    """Wan 2.2's average-down shortcut pools, which PyTorch's CPU kernels cannot do in bf16
    or fp16 (this failed before): its mean is taken in fp32 and rounded once."""
    for name in ("tiny", "tiny-2.2"):
        ref = random_vae(wanvae.preset(name), seed=7)
        s = ref.config.spatial_ratio
        x = random_video(1, 5, 2 * s, 2 * s, seed=8)
        reduced = copy.deepcopy(ref).cast("encoder", dtype).cast("decoder", dtype)
        z = reduced.encode(x)
        y = reduced.decode(z)
        assert z.dtype == y.dtype == dtype and torch.isfinite(y).all()
        assert (z.float() - ref.encode(x)).abs().max() < 0.1, name
