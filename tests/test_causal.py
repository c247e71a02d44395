"""The causal state as a value: chunking, causality, inspection, save and restore."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from wanvae import CausalState
from conftest import random_video


def encode_in_chunks(vae, x, sizes):
    state, means = CausalState(), []
    start = 0
    for n in sizes:
        (mean, _), state = vae.encode_step(x[:, :, start : start + n], state)
        means.append(mean)
        start += n
    assert start == x.shape[2]
    return torch.cat(means, dim=2), state


@pytest.mark.parametrize("sizes", [[17], [1, 4, 4, 4, 4], [1, 8, 8], [5, 12], [9, 4, 4]])
def test_one_pass_equals_any_chunking(tiny_vae, tiny_vae64, sizes):
    x = random_video(1, 17, 16, 16, seed=20)
    whole, _ = encode_in_chunks(tiny_vae64, x.double(), [17])
    chunked, _ = encode_in_chunks(tiny_vae64, x.double(), sizes)
    torch.testing.assert_close(chunked, whole, atol=1e-12, rtol=0)
    # In float32 the only difference is the conv kernels' summation order.
    whole, _ = encode_in_chunks(tiny_vae, x, [17])
    chunked, _ = encode_in_chunks(tiny_vae, x, sizes)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=0)


def test_whole_clip_encode_equals_reference_chunking(tiny_vae64):
    x = random_video(1, 13, 16, 24, seed=21).double()
    ref_chunks, _ = encode_in_chunks(tiny_vae64, x, [1, 4, 4, 4])
    mean, _ = tiny_vae64.encode_moments(x)
    torch.testing.assert_close(mean, ref_chunks, atol=1e-12, rtol=0)


def test_a_prefix_encodes_to_a_prefix(tiny_vae):
    x = random_video(1, 17, 16, 16, seed=22)
    whole = tiny_vae.encode(x)
    for k in range(4):
        prefix = tiny_vae.encode(x[:, :, : 1 + 4 * k])
        assert prefix.shape[2] == 1 + k
        torch.testing.assert_close(prefix, whole[:, :, : 1 + k], atol=1e-5, rtol=0)


def test_a_latent_prefix_decodes_to_a_pixel_prefix(tiny_vae64):
    z = torch.randn(1, 16, 4, 2, 2, generator=torch.Generator().manual_seed(23), dtype=torch.float64)
    whole = tiny_vae64.decode(z, clamp=False)
    for t in (1, 2, 3):
        prefix = tiny_vae64.decode(z[:, :, :t], clamp=False)
        torch.testing.assert_close(prefix, whole[:, :, : 1 + 4 * (t - 1)], atol=1e-12, rtol=0)


@pytest.mark.parametrize("sizes", [[4], [1, 1, 1, 1], [1, 3], [2, 2], [3, 1]])
def test_decode_steps_equal_one_pass(tiny_vae64, sizes):
    z = torch.randn(1, 16, 4, 2, 3, generator=torch.Generator().manual_seed(24), dtype=torch.float64)
    state, outs, start = CausalState(), [], 0
    for n in sizes:
        out, state = tiny_vae64.decode_step(z[:, :, start : start + n], state)
        outs.append(out)
        start += n
    whole, _ = tiny_vae64.decode_step(z, CausalState())
    torch.testing.assert_close(torch.cat(outs, dim=2), whole, atol=1e-12, rtol=0)
    assert state.frames_seen == 4


def test_state_keys_are_the_stateful_layers_and_hold_at_most_their_lookback(tiny_vae):
    x = random_video(1, 9, 16, 16, seed=25)
    _, state = encode_in_chunks(tiny_vae, x, [1, 4, 4])
    assert state.frames_seen == 9
    assert set(state.history) == set(tiny_vae.stateful_layers("encoder"))
    assert "encoder.downsamples.5.time_conv" in state.history
    assert "encoder.downsamples.0.residual.2" in state.history
    for key, frames in state.history.items():
        lookback = 1 if key.endswith("time_conv") else 2
        assert frames.shape[2] == lookback, key
    z = torch.randn(1, 16, 3, 2, 2)
    _, dstate = tiny_vae.decode_step(z, CausalState())
    assert set(dstate.history) == set(tiny_vae.stateful_layers("decoder"))
    assert all(v.shape[2] <= 2 for v in dstate.history.values())


def test_after_one_frame_history_holds_one_frame_and_upsamplers_start_later(tiny_vae):
    _, state = tiny_vae.encode_step(random_video(1, 1, 16, 16, seed=26), CausalState())
    assert all(v.shape[2] == 1 for v in state.history.values())
    _, dstate = tiny_vae.decode_step(torch.randn(1, 16, 1, 2, 2), CausalState())
    # The decoder's temporal up-samplers skip latent frame 0: nothing recorded for them yet.
    assert not [k for k in dstate.history if k.endswith("time_conv")]


def test_a_step_never_mutates_the_state_it_was_given(tiny_vae):
    x = random_video(1, 9, 16, 16, seed=27)
    _, state = tiny_vae.encode_step(x[:, :, :5], CausalState())
    snapshot = state.clone()
    (a, _), s1 = tiny_vae.encode_step(x[:, :, 5:9], state)
    (b, _), s2 = tiny_vae.encode_step(x[:, :, 5:9], state)  # replay from the same state
    assert state.equal(snapshot)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert s1.equal(s2)
    with pytest.raises(TypeError):
        state.history["x"] = torch.zeros(1)  # read-only mapping


def test_state_saved_and_restored_continues_exactly(tiny_vae, tmp_path):
    x = random_video(1, 13, 16, 16, seed=28)
    whole, _ = encode_in_chunks(tiny_vae, x, [1, 4, 8])
    head, state = encode_in_chunks(tiny_vae, x[:, :, :5], [1, 4])
    save_file(state.to_tensors(), str(tmp_path / "state.safetensors"))
    restored = CausalState.from_tensors(load_file(str(tmp_path / "state.safetensors")))
    assert restored.equal(state)
    (tail, _), _ = tiny_vae.encode_step(x[:, :, 5:], restored)
    torch.testing.assert_close(torch.cat([head, tail], dim=2), whole, atol=1e-6, rtol=0)


def test_step_chunk_rules_are_enforced(tiny_vae):
    x = random_video(1, 9, 16, 16, seed=29)
    with pytest.raises(ValueError, match=r"first encode step takes 1 \+ 4k frames, got 4"):
        tiny_vae.encode_step(x[:, :, :4], CausalState())
    _, state = tiny_vae.encode_step(x[:, :, :1], CausalState())
    with pytest.raises(ValueError, match="multiple of 4 frames, got 3"):
        tiny_vae.encode_step(x[:, :, 1:4], state)


def test_state_bytes_are_reported(tiny_vae):
    _, state = tiny_vae.encode_step(random_video(1, 5, 16, 16, seed=30), CausalState())
    assert state.nbytes == sum(v.numel() * 4 for v in state.history.values()) > 0
