"""Streams: any split equals the whole-clip call; frame policies; memory flat in length."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import wanvae
from conftest import random_video


def run_stream(vae, x, split, **kw):
    stream = wanvae.StreamEncoder(vae, **kw)
    outs, i = [], 0
    for n in split:
        outs.append(stream.push(x[:, :, i : i + n]))
        i += n
    outs.append(stream.flush())
    return torch.cat(outs, dim=2), stream, outs


@pytest.mark.parametrize("split", [[17], [1] * 17, [3, 5, 9], [16, 1], [2, 15]])
@pytest.mark.parametrize("tile", [None, 128])
def test_any_split_equals_encode(tiny_vae, split, tile):
    x = random_video(1, 17, 136, 272, seed=60)
    ref = tiny_vae.encode(x, tile=tile)
    out, stream, _ = run_stream(tiny_vae, x, split, tile=tile)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    assert stream.frames_in == 17 and stream.latents_out == 5


def test_first_latent_comes_from_the_first_frame(tiny_vae):
    x = random_video(1, 9, 16, 16, seed=61)
    stream = wanvae.StreamEncoder(tiny_vae)
    first = stream.push(x[:, :, :1])
    assert first.shape == (1, 16, 1, 2, 2)
    torch.testing.assert_close(first, tiny_vae.encode(x[:, :, :1]), atol=0, rtol=0)
    assert stream.push(x[:, :, 1:3]).shape[2] == 0  # not final yet: an empty tensor


def test_frame_policies(tiny_vae):
    x = random_video(1, 11, 16, 16, seed=62)
    with pytest.raises(ValueError, match=r"got 11 frames, .*use 9 or 13.*frame_policy='trim' or 'pad'"):
        run_stream(tiny_vae, x, [11])
    out, stream, _ = run_stream(tiny_vae, x, [4, 7], frame_policy="trim")
    assert stream.trimmed == 2 and stream.padded == 0
    torch.testing.assert_close(out, tiny_vae.encode(x[:, :, :9]), atol=1e-6, rtol=0)
    out, stream, _ = run_stream(tiny_vae, x, [11], frame_policy="pad")
    assert stream.padded == 2 and stream.trimmed == 0
    padded = torch.cat([x, x[:, :, -1:].expand(-1, -1, 2, -1, -1)], dim=2)
    torch.testing.assert_close(out, tiny_vae.encode(padded), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="frame_policy must be one of"):
        wanvae.StreamEncoder(tiny_vae, frame_policy="drop")


def test_stream_misuse_is_reported(tiny_vae):
    stream = wanvae.StreamEncoder(tiny_vae)
    stream.push(random_video(1, 1, 16, 16))
    with pytest.raises(ValueError, match="stream started with \\[B=1, H=16, W=16\\]"):
        stream.push(random_video(1, 4, 16, 24))
    stream.push(random_video(1, 4, 16, 16))
    stream.flush()
    with pytest.raises(ValueError, match="after flush"):
        stream.push(random_video(1, 4, 16, 16))


def test_sampled_stream_equals_sampled_encode(tiny_vae):
    x = random_video(1, 9, 16, 16, seed=63)
    ref = tiny_vae.encode(x, sample=True, generator=torch.Generator().manual_seed(5))
    out, _, _ = run_stream(tiny_vae, x, [1, 4, 4], sample=True, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("split", [[5], [1] * 5, [2, 3]])
@pytest.mark.parametrize("tile", [None, 128])
def test_stream_decoder_equals_decode(tiny_vae, split, tile):
    z = torch.randn(1, 16, 5, 17, 34, generator=torch.Generator().manual_seed(64))
    ref = tiny_vae.decode(z, tile=tile)
    stream = wanvae.StreamDecoder(tiny_vae, tile=tile)
    outs, i = [], 0
    for n in split:
        outs.append(stream.push(z[:, :, i : i + n]))
        i += n
    outs.append(stream.flush())
    # Decoder outputs reach ~3 on random weights; oneDNN may pick another kernel for a
    # pushed piece than for the whole, so allow float32 rounding (float64 equality of any
    # chunking is tested in test_causal.py).
    torch.testing.assert_close(torch.cat(outs, dim=2), ref, atol=2e-5, rtol=0)
    assert stream.frames_out == 17


PEAK_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    sys.path.insert(0, "tests")
    from conftest import random_vae, TINY
    import wanvae
    frames, tile = int(sys.argv[1]), None if sys.argv[2] == "none" else int(sys.argv[2])
    torch.set_num_threads(1)
    vae = random_vae(TINY, seed=0)
    stream = wanvae.StreamEncoder(vae, tile=tile, chunk=4)
    g = torch.Generator().manual_seed(0)
    n = 0
    for i in range(frames):
        frame = torch.rand(1, 3, 1, 384, 512, generator=g) * 2 - 1
        n += stream.push(frame).shape[2]
    n += stream.flush().shape[2]
    from wanvae.testing import peak_rss_mb
    print(json.dumps({"latents": n, "peak_mb": peak_rss_mb()}))
    """
)


@pytest.mark.parametrize("tile", ["none", "128"])
def test_stream_memory_does_not_grow_with_length(tile):
    # No malloc tuning from outside: the stream fixes glibc's mmap threshold itself
    # (wanvae.heap), without which fragmentation lifts RSS slowly whatever it keeps.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}

    # Both lengths at once, one thread each: each process measures only its own peak.
    runs = [
        subprocess.Popen([sys.executable, "-c", PEAK_SCRIPT, str(frames), tile], stdout=subprocess.PIPE, text=True, env=env)
        for frames in (13, 41)
    ]
    outs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    short, long = (json.loads(out) for out in outs)
    assert (short["latents"], long["latents"]) == (4, 11)
    # Holding the clip would add 28 frames x 2.4 MB of pixels alone, more in activations.
    growth_mb = long["peak_mb"] - short["peak_mb"]
    assert growth_mb < 10, growth_mb


def test_bound_heap_fixes_the_threshold_unless_the_user_chose_one():
    script = "import wanvae.coding.heap as h; print(h.bound_heap(), h.bound_heap())"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=clean)
    assert out.stdout.split() == (["True", "True"] if sys.platform.startswith("linux") else ["False", "False"])
    chosen = {**clean, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=chosen)
    assert out.stdout.split() == ["True", "True"]
