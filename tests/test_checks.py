"""Bad input: a ValueError that says what is wrong and what would be valid."""

from __future__ import annotations

import pytest
import torch

from conftest import random_video


@pytest.mark.parametrize(
    ("frames", "nearest"),
    [(2, "use 1 or 5"), (10, "use 9 or 13"), (16, "use 13 or 17"), (80, "use 77 or 81")],
)
def test_frame_count_names_the_two_nearest_valid_counts(tiny_vae, frames, nearest):
    with pytest.raises(ValueError, match=rf"got {frames} frames, .*1 \+ 4k frames: {nearest}"):
        tiny_vae.encode(random_video(1, frames, 16, 16))


def test_size_not_multiple_of_8(tiny_vae):
    with pytest.raises(ValueError, match=r"frame size 20x16 \(W x H\) is not a multiple of 8: .* 16x16"):
        tiny_vae.encode(random_video(1, 1, 16, 20))


def test_wrong_channels_and_dims(tiny_vae):
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels in dim 1, got 4"):
        tiny_vae.encode(torch.zeros(1, 4, 1, 16, 16))
    with pytest.raises(ValueError, match=r"add the batch axis: x\[None\]"):
        tiny_vae.encode(torch.zeros(3, 16, 16))
    with pytest.raises(ValueError, match="got 6 dims"):
        tiny_vae.encode(torch.zeros(1, 1, 3, 1, 16, 16))
    with pytest.raises(ValueError, match=r"latents have 4 dims .* add the batch axis: latents\[None\]"):
        tiny_vae.decode(torch.zeros(16, 2, 2, 2))
    with pytest.raises(ValueError, match="latents must have 16 channels in dim 1, got 8"):
        tiny_vae.decode(torch.zeros(1, 8, 2, 2, 2))


def test_integer_dtype_gets_the_conversion_hint(tiny_vae):
    with pytest.raises(ValueError, match=r"floating-point tensor, got dtype torch.uint8 .*x.float\(\) / 127.5 - 1"):
        tiny_vae.encode(torch.zeros(1, 3, 1, 16, 16, dtype=torch.uint8))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_values(tiny_vae, bad):
    x = torch.zeros(1, 3, 1, 16, 16)
    x[0, 0, 0, 3, 3] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        tiny_vae.encode(x)
    with pytest.raises(ValueError, match="latents contains NaN or infinite"):
        tiny_vae.decode(torch.full((1, 16, 1, 2, 2), bad))


def test_pixels_outside_range_mention_the_0_255_conversion(tiny_vae):
    x = torch.full((1, 3, 1, 16, 16), 200.0)
    with pytest.raises(ValueError, match=r"span \[200, 200\] .*0\.\.255 input needs x / 127.5 - 1"):
        tiny_vae.encode(x)
    tiny_vae.encode(torch.full((1, 3, 1, 16, 16), 1.4))  # small overshoot is accepted
