"""Exact tiling: tiled equals untiled, at every level, for any tile size and frame size."""

from __future__ import annotations

import pytest
import torch

from wanvae.coding import tiling
from wanvae.coding.seams import Seams, TilePosition
from conftest import TINY, random_vae, random_video


@pytest.fixture(scope="module")
def vae64():
    return random_vae(TINY, seed=50).double()


@pytest.mark.parametrize(
    ("height", "width", "tile"),
    [
        (272, 264, 128),  # 2 x 2 tiles, sizes not multiples of the tile
        (400, 392, 128),  # 3 x 3: interior tiles with seams on all four sides
        (392, 400, 128),  # the same, wider than tall: visited column by column
        (136, 392, (128, 512)),  # split along W only
        (392, 136, (512, 128)),  # split along H only
    ],
)
def test_tiled_encode_equals_untiled(vae64, height, width, tile):
    x = random_video(1, 5, height, width, seed=51).double()
    grid = tiling.plan(height, width, tile if isinstance(tile, tuple) else (tile, tile), 8)
    assert len(grid) > 1
    ref = vae64.encode(x)
    torch.testing.assert_close(vae64.encode(x, tile=tile), ref, atol=1e-12, rtol=0)


# (49, 50) mirrors (50, 49) with the axes swapped: kept for -m slow, out of the 10-minute suite.
# The 3 x 3 grid decodes one latent frame: tiles across time chunks are checked by the other
# sizes here and by Wan 2.2's 3 x 3 test.
@pytest.mark.parametrize(("h", "w", "tile", "t"), [(34, 33, 128, 2), (50, 49, 128, 1), pytest.param(49, 50, 128, 2, marks=pytest.mark.slow),
                                                   (17, 49, (128, 256), 2)])
def test_tiled_decode_equals_untiled(vae64, h, w, tile, t):
    z = torch.randn(1, 16, t, h, w, generator=torch.Generator().manual_seed(52), dtype=torch.float64)
    ref = vae64.decode(z, clamp=False)
    torch.testing.assert_close(vae64.decode(z, clamp=False, tile=tile), ref, atol=1e-12, rtol=0)


def test_tiled_float32_within_1e_5(tiny_vae):
    x = random_video(1, 9, 272, 264, seed=53)
    assert (tiny_vae.encode(x, tile=128) - tiny_vae.encode(x)).abs().max() < 1e-5
    z = torch.randn(1, 16, 3, 34, 33, generator=torch.Generator().manual_seed(54))
    assert (tiny_vae.decode(z, tile=128, clamp=False) - tiny_vae.decode(z, clamp=False)).abs().max() < 1e-5


def test_tiles_go_along_the_longer_side_first():
    # Each tile after its upper and left neighbours (what exactness needs); the seams
    # kept between rows (or columns) then span the shorter side.
    wide = [(i, j) for i, j, _, _ in tiling.TileGrid((30, 30), (40, 40, 40)).blocks()]
    tall = [(i, j) for i, j, _, _ in tiling.TileGrid((40, 40, 40), (30, 30)).blocks()]
    assert wide == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]
    assert tall == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    spans = {(i, j): (r, c) for i, j, r, c in tiling.TileGrid((30, 30), (40, 40, 40)).blocks()}
    assert spans[1, 2] == (slice(30, 60), slice(80, 120))


def test_split_axis_keeps_tiles_big_enough():
    assert tiling.split_axis(90, 32, 16) == (30, 30, 30)
    assert tiling.split_axis(33, 16, 16) == (17, 16)
    assert tiling.split_axis(20, 16, 16) == (20,)  # two tiles would be under the minimum
    assert sum(tiling.split_axis(135, 32, 16)) == 135


def test_balance_moves_the_lag_from_the_last_tile_to_the_first():
    assert tiling.balance((17, 17, 16), 12) == (29, 17, 4)
    assert tiling.balance((17, 16), 20) == (32, 1)  # the last tile keeps one position
    assert tiling.balance((40,), 12) == (40,)
    assert tiling.balance((17, 16), 0) == (17, 16)


@torch.no_grad()  # the up path called directly: no autograd graph of a float64 decode
def test_decoder_tiles_each_emit_about_a_tile(vae64):
    # The up path's output trails its block by 98 px: unbalanced, 128-px tiles would emit
    # 38 px (first) to 226 px (last, which flushes), and the last would hold 3x the state.
    assert vae64.decoder.up_lag() == 98
    h, w = 34, 50
    grid = vae64.plan("decoder", (1, 16, 1, h, w), 128).grid
    assert grid.cols == (29, 17, 4) and grid.rows == (29, 5)
    # One latent frame: the sizes a tile emits do not depend on time (the tiled decode of
    # later frames is checked against the whole one in test_tiled_decode_equals_untiled).
    z = torch.randn(1, 16, 1, h, w, generator=torch.Generator().manual_seed(55), dtype=torch.float64)
    fmap = vae64.decoder.mid(vae64.conv2(z), tiling.StepContext(tiling.CausalState()))
    sizes = []

    def run(x, ctx):
        y = vae64.decoder.up(x, ctx)
        sizes.append(tuple(y.shape[3:]))
        return y

    out = tiling.tile_major(run, fmap, grid, 1, [slice(0, 1)], 1, (8 * h, 8 * w))
    heights = {size[0] for size in sizes}
    widths = {size[1] for size in sizes}
    assert heights == {134, 138} and widths == {134, 136, 130}
    whole = vae64.decoder(vae64.conv2(z), tiling.StepContext(tiling.CausalState()))
    torch.testing.assert_close(out, whole, atol=1e-12, rtol=0)


def test_tile_argument_forms(tiny_vae):
    assert tiling.parse_tile(None, 720, 1280, 1.0) is None
    assert tiling.parse_tile(256, 720, 1280, 1.0) == (256, 256)
    assert tiling.parse_tile((320, 192), 720, 1280, 1.0) == (320, 192)
    with pytest.raises(ValueError, match="tile must be an int, a \\(w, h\\) pair, 'auto' or None"):
        tiling.parse_tile("big", 720, 1280, 1.0)
    with pytest.raises(ValueError, match="positive"):
        tiling.parse_tile(0, 720, 1280, 1.0)
    # 'auto' tiles only when the frame's working set would not fit in a quarter of free memory.
    assert tiling.parse_tile("auto", 64, 64, 1.0) is None
    assert tiling.parse_tile("auto", 8192, 8192, 1e6) == (128, 128)


def test_seams_hand_over_exactly_what_the_next_window_needs():
    seams = Seams()
    x = torch.arange(10.0).view(1, 1, 1, 1, 10)
    left = TilePosition(0, 0, 1, 2)
    e = seams.extend(x, left, "k", kernel=3, stride=1, pad_lo=1, pad_hi=1)
    assert e.flatten().tolist() == [0.0, *range(10)]  # one zero of padding at the image edge
    right = TilePosition(0, 1, 1, 2)
    e2 = seams.extend(x + 10, right, "k", kernel=3, stride=1, pad_lo=1, pad_hi=1)
    assert e2.flatten().tolist() == [8.0, 9.0, *range(10, 20), 0.0]  # two handed over, edge zero
    assert len(seams) == 0
    # Stride 2 (the down-sampler): the leftover starts at the next window's start.
    e = seams.extend(x, left, "d", kernel=3, stride=2, pad_lo=0, pad_hi=1, conv_pads=False)
    assert e.shape[-1] == 10
    e2 = seams.extend(x + 10, right, "d", kernel=3, stride=2, pad_lo=0, pad_hi=1, conv_pads=False)
    assert e2.flatten().tolist()[:3] == [8.0, 9.0, 10.0]


def test_attention_in_the_down_path_refuses_tiling():
    from wanvae import VAEConfig

    vae = random_vae(VAEConfig(dim=4, attn_scales=(0.5,)), seed=55)
    with pytest.raises(ValueError, match="attn_scales must be empty"):
        vae.encode(random_video(1, 1, 272, 272), tile=128)


def test_auto_tile_plans_from_the_free_memory_of_the_models_device(monkeypatch):
    """CUDA: the driver's free memory plus the caching allocator's unused blocks (no GPU
    here, so torch.cuda's three queries are stood in for); the CPU: Linux's MemAvailable."""
    import math

    from wanvae.coding.tiling import auto_tile, available_memory

    per_pixel = 48 * 384 * 2  # Wan 2.1's estimate in bf16
    gib = 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 3 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 2 * gib)
    cuda = torch.device("cuda", 0)
    assert available_memory(cuda) == 3 * gib
    side = int(math.sqrt(3 * gib / 4 / per_pixel)) // 64 * 64
    assert auto_tile(720, 1280, per_pixel, cuda) == (side, side) and 128 <= side < 720
    # A quarter of the free memory must hold the whole frame's working set to go untiled.
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4 * 720 * 1280 * per_pixel, 140 * gib))
    assert auto_tile(720, 1280, per_pixel, cuda) is None
    with open("/proc/meminfo") as f:
        avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    assert abs(available_memory(torch.device("cpu")) - avail) < 2**30


@torch.no_grad()
def test_time_major_equals_tile_major_and_whole_clips_take_the_smaller(tiny_vae):
    """Both orders run the same ops on the same tile and chunk shapes: equal bit for bit.
    Tile-major keeps every chunk's seams for the next tiles (growing with the clip),
    time-major every tile's state (flat once full): the plan is measured, and long clips switch."""
    from wanvae.coding.plan import frame_chunks, in_chunks
    from wanvae.model.vae import MEASURED_FROM_CHUNKS, tile_order

    vae = tiny_vae
    n = MEASURED_FROM_CHUNKS
    z = torch.randn(1, 16, n, 8, 32, generator=torch.Generator().manual_seed(56))
    plan = vae.plan("decoder", tuple(z.shape), 128)
    grid = plan.grid
    assert grid is not None and len(grid) == 2
    chunks = plan.chunks(n)
    assert chunks == frame_chunks(n, 1, 1)  # tiled passes take the shortest chunks
    fmap = in_chunks(vae.stages("decoder").pre, z, chunks)
    peaks, outs = {}, {}
    for name, driver in (("tile", tiling.tile_major), ("time", tiling.time_major)):
        for k in (4, n):
            meter = [0]
            outs[name, k] = driver(vae.decoder.up, fmap[:, :, :k], grid, 1, chunks[:k], vae.config.pixel_frames(k), (64, 256), meter=meter)
            peaks[name, k] = meter[0]
    assert torch.equal(outs["tile", n], outs["time", n])
    assert peaks["tile", n] > peaks["tile", 4]  # seams pile up
    assert peaks["time", n] == peaks["time", 4]  # flat once every state is full
    bounds = tuple((c.start, c.stop) for c in chunks)
    order = tile_order(vae.config, "decoder", tuple(z.shape), z.dtype, grid, bounds)
    assert order == ("time" if peaks["time", n] < peaks["tile", n] else "tile") == plan.order
    assert tile_order(vae.config, "decoder", tuple(z[:, :, :2].shape), z.dtype, grid, bounds[:2]) == "tile"
    long = tuple((c.start, c.stop) for c in frame_chunks(200, 1, 1))
    assert tile_order(vae.config, "decoder", (1, 16, 200, *z.shape[3:]), z.dtype, grid, long) == "time"
    assert vae.plan("decoder", (1, 16, 200, *z.shape[3:]), 128).order == "time"
