"""One plan for whole clips and streams, and the causal conv's paths one by one."""

from __future__ import annotations

import pytest
import torch

from conftest import random_video
from wanvae.coding.plan import PassPlan, Stepper, frame_chunks, run_clip
from wanvae.coding.seams import Seams, TileContext, TilePosition
from wanvae.coding.state import CausalState, StepContext, prepend_history
from wanvae.model.layers import CausalConv3d, RMSNorm


@torch.no_grad()
@pytest.mark.parametrize("part", ["encoder", "decoder"])
@pytest.mark.parametrize("tile", [None, 128])
def test_whole_clips_and_steppers_follow_one_plan_bit_for_bit(tiny_vae, part, tile):
    """`run_clip` (tile-major on a grid) and a `Stepper` over the plan's chunks (time-major)
    run the same calls on the same chunks and tiles: equal bit for bit."""
    vae = tiny_vae
    if part == "encoder":
        x = random_video(1, 13, 128, 256, seed=70)
    else:
        x = torch.randn(1, 16, 4, 16, 32, generator=torch.Generator().manual_seed(71))
    plan = vae.plan(part, tuple(x.shape), tile)
    assert (plan.grid is None) == (tile is None)
    assert plan.chunks(x.shape[2]) == frame_chunks(x.shape[2], plan.first, plan.step)
    if tile is not None:
        assert plan.step == (vae.config.temporal_ratio if part == "encoder" else 1)  # tiled: the shortest chunks
    stages = vae.stages(part)
    whole = run_clip(stages, plan, x)
    stepper = Stepper(stages, plan)
    steps = torch.cat([stepper(x[:, :, c]) for c in plan.chunks(x.shape[2])], dim=2)
    assert torch.equal(steps, whole)
    assert stepper.nbytes > 0  # the state it carries on, every tile's own on a grid
    public = vae.encode_moments(x, tile=tile)[0] if part == "encoder" else vae.decode(x, tile=tile, raw=True, clamp=False)
    assert torch.equal(vae.split_moments(whole)[0] if part == "encoder" else whole, public)


def test_a_plan_counts_its_chunks_from_the_first_frame():
    plan = PassPlan(grid=None, step=8)
    assert plan.chunks(17) == [slice(0, 1), slice(1, 9), slice(9, 17)]
    assert plan.chunks(1) == [slice(0, 1)]
    assert plan.chunks(12) == [slice(0, 1), slice(1, 9), slice(9, 12)]  # a stream's flush takes the rest


# ---- the causal conv's paths, each against the plain one ------------------------------------------
def _conv_and_norm(seed: int = 0) -> tuple[CausalConv3d, RMSNorm]:
    g = torch.Generator().manual_seed(seed)
    conv = CausalConv3d(8, 8, (3, 3, 3), 1)
    conv.state_key = "conv"
    norm = RMSNorm(8)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) / (8 * 27) ** 0.5)
        conv.bias.copy_(torch.randn(8, generator=g) * 0.1)
        norm.gamma.copy_(1 + 0.1 * torch.randn(norm.gamma.shape, generator=g))
    return conv.eval(), norm


def _frames(t: int, seed: int) -> torch.Tensor:
    return torch.randn(1, 8, t, 10, 12, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_first_frame_conv_is_the_plain_conv_after_zero_frames():
    conv, _ = _conv_and_norm()
    x = _frames(1, 1)
    plain = conv.history_conv(prepend_history(x, None, conv.lookback), (0, 1, 1))
    torch.testing.assert_close(conv.first_frame_conv(x, (0, 1, 1)), plain, atol=1e-6, rtol=0)
    # forward takes it for a stream's first frame, and keeps that frame for the next step
    ctx = StepContext(CausalState())
    torch.testing.assert_close(conv(x, ctx), plain, atol=1e-6, rtol=0)
    assert ctx.result(1).history["conv"].shape[2] == 1


@torch.no_grad()
def test_fused_input_conv_is_the_plain_conv_of_the_normalised_input():
    conv, norm = _conv_and_norm(1)
    history, x = _frames(2, 2), _frames(4, 3)
    ctx = StepContext(CausalState(1, {"conv": history}))
    assert conv.fuses_input(x, ctx)
    fused = conv(x.clone(), ctx, pre=norm)
    plain = conv.history_conv(prepend_history(norm.silu(x.clone()), history, 2), (0, 1, 1))
    torch.testing.assert_close(fused, plain, atol=1e-6, rtol=0)
    # the history it keeps is the normalised input's last frames, as the plain path keeps
    torch.testing.assert_close(ctx.result(4).history["conv"], norm.silu(x.clone())[:, :, -2:], atol=1e-6, rtol=0)


def test_the_fused_path_is_refused_where_it_cannot_hold():
    conv, _ = _conv_and_norm()
    x = _frames(4, 4)
    with torch.no_grad():
        assert conv.fuses_input(x, StepContext(CausalState()))
        tile = TileContext(CausalState(), Seams(), TilePosition(0, 0, 1, 2))
        assert not conv.fuses_input(x, tile)  # a tile's input takes its seams first
        assert not conv.fuses_input(x, StepContext(CausalState(), skip_constant=True))
        assert not conv.fuses_input(x[:, :, :1], StepContext(CausalState()))  # the 2D first frame instead
    with torch.enable_grad():
        assert not conv.fuses_input(x, StepContext(CausalState()))  # autograd keeps its graph


@torch.no_grad()
def test_constant_tail_conv_computes_a_repeated_frame_once_and_equals_the_plain_conv(monkeypatch):
    conv, _ = _conv_and_norm(2)
    head = _frames(2, 5)
    s = torch.cat([head, head[:, :, -1:].expand(-1, -1, 6, -1, -1)], dim=2)  # history 2 + 6 frames
    plain = conv.history_conv(s, (0, 1, 1))
    ctx = StepContext(CausalState(), skip_constant=True)
    calls = []
    history_conv = conv.history_conv
    monkeypatch.setattr(conv, "history_conv", lambda v, p: calls.append(v.shape[2]) or history_conv(v, p))
    out = conv.constant_tail_conv(s, 6, (0, 1, 1), None, ctx)
    torch.testing.assert_close(out, plain, atol=1e-6, rtol=0)
    # The repeated frame starts at index 1, so output 1's window is the first all-repeated one:
    # one conv over 4 frames gives outputs 0 and 1, and outputs 2..5 are copies of output 1.
    assert calls == [4]
