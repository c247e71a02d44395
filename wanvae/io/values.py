"""Command-line value types: every number a command takes is checked here, at parse time.

argparse calls these before any command runs, and before torch is imported, so a bad
value costs nothing and stops nothing half-done. Each refusal names the valid range.
Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import math

# Beyond these, a value is a typo or an attack, not a video: 16384 px is four 4K frames
# across, 1000 fps is a high-speed camera, a million frames is nine hours at 30 fps.
MAX_SIDE = 16384
MAX_FPS = 1000.0
MAX_FRAMES = 1_000_000
MAX_SECONDS = 1e7  # about 16 weeks
MAX_SEED = 2**63 - 1


def _fail(text: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(text)


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _fail(f"expected {what}, got {text!r}") from None


def _float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _fail(f"expected {what}, got {text!r}") from None
    if not math.isfinite(value):
        raise _fail(f"expected {what}, got {text!r} (not a finite number)")
    return value


def int_in(low: int, high: int, what: str = "an integer"):
    """An argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        value = _int(text, what)
        if not low <= value <= high:
            raise _fail(f"expected {what} from {low} to {high}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def float_in(low: float, high: float, what: str, *, open_low: bool = False):
    """An argparse type: a finite number in [low, high] (or (low, high] with `open_low`)."""

    def parse(text: str) -> float:
        value = _float(text, what)
        if value > high or value < low or (open_low and value == low):
            bracket = "(" if open_low else "["
            raise _fail(f"expected {what} in {bracket}{low:g}, {high:g}], got {text}")
        return value

    parse.__name__ = "number"
    return parse


def size(text: str) -> tuple[int, int]:
    """W x H, each side 1 to MAX_SIDE (multiples of the model's factor are checked once it is known)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise _fail(f"expected WxH such as 832x480, got {text!r}") from None
    if not (1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE):
        raise _fail(f"expected WxH with each side from 1 to {MAX_SIDE}, got {text}")
    return w, h


def tile(text: str):
    """Pixels (256), W x H (384x256), 'auto' or 'none'."""
    if text in ("auto", "none"):
        return None if text == "none" else "auto"
    if "x" in text.lower():
        return size(text)
    value = _int(text, "pixels (256), WxH (384x256), 'auto' or 'none'")
    if not 1 <= value <= MAX_SIDE:
        raise _fail(f"expected a tile from 1 to {MAX_SIDE} pixels, got {value}")
    return value


def frame_count(text: str) -> int:
    """1 + 4k frames, as both Wan VAEs take them."""
    value = _int(text, "a frame count such as 81")
    if not 1 <= value <= MAX_FRAMES or (value - 1) % 4:
        raise _fail(f"expected 1 + 4k frames (1, 5, ..., 81, ...) up to {MAX_FRAMES}, got {value}")
    return value


frame_rate = float_in(0.0, MAX_FPS, "frames per second", open_low=True)
seconds = float_in(0.0, MAX_SECONDS, "seconds")
seed = int_in(0, MAX_SEED, "a seed")
area = int_in(1, MAX_SIDE * MAX_SIDE, "an area in pixels")


def plural(n: int, noun: str) -> str:
    """'1 frame', '17 frames': counts as a person writes them."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
