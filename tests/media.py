"""Real media made in the tests with PyAV: moving patterns in several codecs and sizes."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def pattern(i: int, w: int, h: int) -> np.ndarray:
    """Frame i of a smooth moving pattern, [h, w, 3] uint8."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 128 + 100 * np.sin(xx / 9.0 + i * 0.4)
    g = 128 + 100 * np.cos(yy / 7.0 - i * 0.3)
    b = 128 + 80 * np.sin((xx + yy) / 13.0 + i * 0.2)
    return np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8)


def write_video(path: Path, frames: int, w: int, h: int, codec: str = "libx264", fps: int = 16, pts: list[int] | None = None,
                colorspace: str | None = None, color_range: str | None = None, fmt: str | None = None,
                solid: tuple[int, int, int] | None = None) -> Path:
    """A clip of the moving pattern (or a solid colour). `pts` (in 1/1000 s) makes it variable-rate."""
    container = av.open(str(path), "w", format=fmt)
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height = w, h
    stream.pix_fmt = {"gif": "rgb8", "png": "rgb24", "mjpeg": "yuvj420p"}.get(codec, "yuv420p")
    if pts is not None:
        stream.time_base = Fraction(1, 1000)
        stream.codec_context.time_base = Fraction(1, 1000)
    if colorspace:
        codes = {"ITU709": 1, "ITU601": 6}
        stream.codec_context.colorspace = codes[colorspace]
        stream.codec_context.color_range = 2 if color_range == "JPEG" else 1
    for i in range(frames):
        img = pattern(i, w, h) if solid is None else np.full((h, w, 3), solid, np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        if colorspace:
            frame = frame.reformat(format="yuv420p", dst_colorspace=colorspace, dst_color_range=color_range or "MPEG")
            frame.colorspace = {"ITU709": 1, "ITU601": 6}[colorspace]
            frame.color_range = 2 if color_range == "JPEG" else 1
        if pts is not None:
            frame.pts = pts[i]
            frame.time_base = Fraction(1, 1000)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def write_image(path: Path, w: int, h: int, i: int = 0) -> Path:
    codec = {".png": "png", ".jpg": "mjpeg", ".webp": "libwebp"}[path.suffix]
    container = av.open(str(path), "w", format="image2")
    stream = container.add_stream(codec, rate=1)
    stream.width, stream.height = w, h
    stream.pix_fmt = {"png": "rgb24", "mjpeg": "yuvj420p", "libwebp": "yuv420p"}[codec]
    frame = av.VideoFrame.from_ndarray(pattern(i, w, h), format="rgb24").reformat(format=stream.pix_fmt)
    return _finish(path, container, stream, [frame])


def write_audio_only(path: Path) -> Path:
    container = av.open(str(path), "w")
    stream = container.add_stream("pcm_s16le", rate=8000)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
    frame.sample_rate = 8000
    return _finish(path, container, stream, [frame])


def _finish(path: Path, container, stream, frames) -> Path:
    """Encode the last frames, flush the encoder and close the file."""
    for frame in [*frames, None]:
        for packet in stream.encode(frame):
            container.mux(packet)
    container.close()
    return path
