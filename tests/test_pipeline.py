"""Files in, files out: the whole-clip and the streaming paths agree, and each is taken when it
costs less memory."""

from __future__ import annotations

import pytest
import torch

import wanvae
from wanvae import StreamDecoder, StreamEncoder
from wanvae.io import files, video
from wanvae.testing import randomize
from conftest import random_video
import media


@pytest.fixture(scope="module", params=["tiny", "tiny-2.2"])
def vae(request):
    return randomize(wanvae.WanVAE(wanvae.preset(request.param)), seed=90)


def test_the_state_estimate_is_what_a_real_stream_keeps(vae):
    s = vae.config.spatial_ratio
    h, w = 2 * s, 3 * s
    stream = StreamEncoder(vae, chunk=4)
    for _ in range(3):
        stream.push(random_video(1, 4, h, w, seed=1))
    assert stream.state_nbytes == vae.stream_state_nbytes("encoder", h, w)
    decoder = StreamDecoder(vae)
    for _ in range(3):
        decoder.push(torch.randn(1, vae.config.z_dim, 1, 2, 3))
    decoder.flush()  # pushes are held until a chunk is full: decode them all
    assert decoder.state_nbytes == vae.stream_state_nbytes("decoder", h, w)


def test_short_clips_go_whole_and_long_ones_stream(vae):
    state = vae.stream_state_nbytes("decoder", 64, 96)
    frames_like_state = state // (3 * 64 * 96 * 4)
    assert files.whole_clip_is_smaller(vae, "decoder", frames_like_state, 64, 96)
    assert not files.whole_clip_is_smaller(vae, "decoder", frames_like_state + 1, 64, 96)


def test_both_paths_give_the_same_latents_and_the_same_frames(vae, tmp_path, monkeypatch):
    clip = media.write_video(tmp_path / "c.mp4", 13, 96, 64)
    written: list[torch.Tensor] = []
    write = video.VideoWriter.write
    monkeypatch.setattr(video.VideoWriter, "write", lambda self, frame: written.append(frame.clone()) or write(self, frame))
    whole, _ = wanvae.encode_file(clip, vae, tile=None)
    files.decode_latents_to_file(whole, vae, tmp_path / "whole.mp4")
    decoded_whole, written[:] = torch.stack(written), []
    monkeypatch.setattr(files, "whole_clip_is_smaller", lambda *a: False)
    streamed, _ = wanvae.encode_file(clip, vae, tile=None)
    torch.testing.assert_close(streamed, whole, atol=1e-6, rtol=0)
    files.decode_latents_to_file(whole, vae, tmp_path / "stream.mp4")
    decoded_stream = torch.stack(written)
    assert decoded_whole.shape == decoded_stream.shape == (13, 3, 64, 96)
    torch.testing.assert_close(decoded_stream, decoded_whole, atol=1e-5, rtol=0)
    assert video.probe(tmp_path / "stream.mp4").frames == video.probe(tmp_path / "whole.mp4").frames == 13
