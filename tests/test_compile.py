"""torch.compile and the generic path: what CUDA runs, run and checked on the CPU.

Compiled kernels must give eager's numbers, compile only while warming up (dynamo falls
back to eager without a word once a function passes its recompile limit, so the counters
are read), and the oneDNN routes must stay out of traced code. The generic path (the
routes off, as on CUDA) must equal the fast one.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch._dynamo.utils import counters

import wanvae
from conftest import TINY, random_vae, random_video
from wanvae.model import routes

TOL = 1e-5


@pytest.fixture
def dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield counters
    torch._dynamo.reset()


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


def assert_no_eager_fallback() -> None:
    frames = counters["frames"]
    assert frames["total"] == frames["ok"], f"dynamo gave up on {frames['total'] - frames['ok']} frame(s): recompile limit or an untraceable op"


def jobs(vae, x, z):
    """Every way through the model: whole clips, tiles of two shapes, streams, an image."""
    def stream_encode():
        s = wanvae.StreamEncoder(vae)
        return torch.cat([s.push(x[:, :, :3]), s.push(x[:, :, 3:]), s.flush()], dim=2)

    def stream_decode():
        s = wanvae.StreamDecoder(vae)
        return torch.cat([s.push(z[:, :, :1]), s.push(z[:, :, 1:]), s.flush()], dim=2)

    return {
        "encode 25 frames": lambda: vae.encode(x),
        "encode tiled 48": lambda: vae.encode(x, tile=48),
        "encode tiled 40x56": lambda: vae.encode(x[..., :80], tile=(40, 56)),
        "stream encode": stream_encode,
        "image": lambda: vae.encode(x[:, :, 0]),
        "decode": lambda: vae.decode(z),
        "decode tiled 48": lambda: vae.decode(z, tile=48),
        "stream decode": stream_decode,
    }


def test_compiled_kernels_equal_eager_and_compile_only_while_warming_up(dynamo):
    """dynamo's own tracing (backend='eager', no codegen): the graphs, guards and
    recompiles are inductor's, at a fraction of the time."""
    eager = random_vae(TINY, seed=1)
    x = random_video(1, 25, 64, 96, seed=3)
    z = eager.encode(x[:, :, :13])
    expected = {name: job() for name, job in jobs(eager, x, z).items()}
    vae = copy.deepcopy(eager).compile(backend="eager", dynamic=True)
    assert vae.compiled and not eager.compiled
    # Warm-up: the first frame and the first regular chunk of each part.
    vae.encode(x[:, :, :13])
    vae.decode(z)
    warm = graphs()
    assert warm > 0
    for name, job in jobs(vae, x, z).items():
        torch.testing.assert_close(job(), expected[name], atol=TOL, rtol=0, msg=name)
        assert graphs() == warm, f"{name}: compiled {graphs() - warm} new graph(s) after the warm-up"
    assert_no_eager_fallback()
    vae.compile(disable=True)
    assert not vae.compiled


def test_inductor_gives_eager_numbers(dynamo):
    eager = random_vae(TINY, seed=2)
    x = random_video(1, 13, 32, 48, seed=4)
    z = eager.encode(x)
    want = (eager.encode(x), eager.encode(x, tile=32), eager.decode(z))
    vae = copy.deepcopy(eager).compile()
    got = (vae.encode(x), vae.encode(x, tile=32), vae.decode(z))
    for name, a, b in zip(("encode", "tiled encode", "decode"), got, want):
        torch.testing.assert_close(a, b, atol=TOL, rtol=0, msg=name)
    assert_no_eager_fallback()


@pytest.mark.slow
def test_max_autotune_gives_eager_numbers(dynamo):
    eager = random_vae(TINY, seed=2)
    x = random_video(1, 5, 32, 32, seed=4)
    vae = copy.deepcopy(eager).compile(mode="max-autotune-no-cudagraphs")
    torch.testing.assert_close(vae.encode(x), eager.encode(x), atol=TOL, rtol=0)
    assert_no_eager_fallback()


def test_compiling_encode_itself_traces_no_onednn_call(dynamo):
    """What a user tries first: torch.compile around the call. The direct oneDNN route
    cannot be traced (it fails on fake tensors), so traced code takes F.conv3d."""
    vae = random_vae(TINY, seed=1)
    x = random_video(1, 5, 32, 32, seed=5)
    torch.testing.assert_close(torch.compile(vae.encode, backend="eager")(x), vae.encode(x), atol=TOL, rtol=0)


def conv3d_calls(fn) -> int:
    """How many convs went through PyTorch's F.conv3d dispatch (the generic path)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key == "aten::conv3d")


def test_generic_path_equals_the_onednn_one():
    vae = random_vae(TINY, seed=1)
    x = random_video(1, 13, 64, 96, seed=6)
    z = vae.encode(x[:, :, :9])
    cases = jobs(vae, x, z)
    fast = {name: job() for name, job in cases.items()}
    assert conv3d_calls(lambda: vae.encode(x[:, :, :5])) == 0  # every 3-D conv went straight to oneDNN
    with routes.generic_path():
        assert not routes.onednn_routes()
        assert conv3d_calls(lambda: vae.encode(x[:, :, :5])) > 0
        generic = {name: job() for name, job in cases.items()}
    assert routes.onednn_routes()
    for name in cases:
        torch.testing.assert_close(generic[name], fast[name], atol=TOL, rtol=0, msg=name)
