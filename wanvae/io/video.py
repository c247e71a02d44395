"""Video and image files in and out, through PyAV (FFmpeg).

Reading is planned before it starts: a demux pass (no decoding) lists every frame's
timestamp, so the frames to use, their count and any frame-count problem are known
before the first frame is decoded. Frames are then decoded one at a time, converted to
RGB with the colour matrix and range the stream declares (BT.601 limited range when it
declares none), resized as floats, and handed on as [3, H, W] tensors in [-1, 1].
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .atomic import AtomicFile

RESIZE_MODES = ("crop", "pad", "stretch")
# The one list of what wanvae reads by name: `encode`, `cache` and training search folders with it.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".mkv", ".webm", ".mov", ".avi", ".gif", ".m4v"}

# AVColorSpace codes -> swscale's names. Unknown or unspecified -> BT.601.
_COLORSPACES = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "SMPTE170M", 7: "SMPTE240M", 9: "BT2020", 10: "BT2020"}


class MediaError(ValueError):
    """A file that cannot be read as a video or image, or a request it cannot meet."""


def _av():
    import av

    return av


@dataclass(frozen=True)
class VideoInfo:
    path: str
    width: int
    height: int
    # Presentation timestamps of every frame, in the stream's time base, sorted.
    pts: tuple[int, ...]
    time_base: Fraction
    fps: float
    is_image: bool
    codec: str

    @property
    def frames(self) -> int:
        return len(self.pts)

    def seconds(self, i: int) -> float:
        return float((self.pts[i] - self.pts[0]) * self.time_base)

    @property
    def duration(self) -> float:
        """From the first frame's start to the last frame's end."""
        if self.frames == 0:
            return 0.0
        return self.seconds(self.frames - 1) + 1.0 / self.fps


def probe(path: str | os.PathLike) -> VideoInfo:
    """Open `path`, find its video stream and list its frames' timestamps (no decoding)."""
    av = _av()
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if path.is_dir():
        raise MediaError(f"{path}: is a folder, not a video or image file")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise MediaError(f"{path}: not a readable video or image (corrupt, truncated or another kind of file; FFmpeg: {_reason(e)})") from None
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise MediaError(f"{path}: has no video stream (streams: {', '.join(kinds)})")
        stream = container.streams.video[0]
        time_base = stream.time_base or Fraction(1, 25)
        pts: list[int] = []
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                pts.append(packet.pts if packet.pts is not None else (pts[-1] + 1 if pts else 0))
        except av.error.FFmpegError as e:
            raise MediaError(f"{path}: corrupt or truncated ({_reason(e)})") from None
        if not pts:
            raise MediaError(f"{path}: its video stream holds no frames")
        pts.sort()
        ctx = stream.codec_context
        width, height = ctx.width, ctx.height
        if not width or not height:
            raise MediaError(f"{path}: the video stream declares no frame size")
        rate = stream.average_rate or stream.guessed_rate
        if len(pts) > 1 and pts[-1] > pts[0]:
            measured = (len(pts) - 1) / float((pts[-1] - pts[0]) * time_base)
            fps = float(rate) if rate and abs(float(rate) - measured) / measured < 0.01 else measured
        else:
            fps = float(rate) if rate else 16.0
        _check_complete(path, container, stream, pts, time_base, fps)
        is_image = path.suffix.lower() in IMAGE_SUFFIXES or container.format.name in ("image2", "png_pipe", "jpeg_pipe", "webp_pipe")
        return VideoInfo(str(path), width, height, tuple(pts), time_base, fps, is_image, stream.codec_context.name)


def _check_complete(path: Path, container, stream, pts: list[int], time_base: Fraction, fps: float) -> None:
    """A truncated file demuxes as a shorter video: compare with what the container declares."""
    declared = stream.frames or 0
    if declared > len(pts):
        raise MediaError(f"{path}: truncated or corrupt: the container lists {declared} frames but only {len(pts)} can be read")
    if container.duration and len(container.streams) == 1 and len(pts) > 1:
        declared_s = container.duration / 1_000_000
        found_s = float((pts[-1] - pts[0]) * time_base) + 1.0 / fps
        if declared_s > found_s + max(0.5, 0.05 * declared_s):
            raise MediaError(f"{path}: truncated or corrupt: the container lasts {declared_s:.2f}s but its frames end at {found_s:.2f}s")


def _reason(e: Exception) -> str:
    text = getattr(e, "strerror", None) or str(e)
    return text.split(":")[-1].strip() if ":" in text else text


@dataclass(frozen=True)
class FramePlan:
    """Which source frames make the clip, in order (a frame may repeat when --fps raises the rate)."""

    indices: tuple[int, ...]
    start: float  # seconds from the first frame
    fps: float  # the clip's frame rate
    trimmed: int = 0
    padded: int = 0

    @property
    def count(self) -> int:
        return len(self.indices)


def plan_frames(
    info: VideoInfo,
    start: float = 0.0,
    fps: float | None = None,
    frames: int | None = None,
    frame_policy: str = "error",
    ratio: int = 4,
) -> FramePlan:
    """Pick the source frames: from `start` seconds, resampled to `fps` (nearest frame),
    at most `frames` of them, then made 1 + ratio*k long by `frame_policy`."""
    from ..checks import frame_count_error

    name = Path(info.path).name
    if start < 0:
        raise MediaError(f"--start must be >= 0 seconds, got {start}")
    if fps is not None and fps <= 0:
        raise MediaError(f"--fps must be positive, got {fps}")
    if frames is not None and frames < 1:
        raise MediaError(f"--frames must be at least 1, got {frames}")
    times = [info.seconds(i) for i in range(info.frames)]
    half = 0.5 / info.fps
    first = bisect.bisect_left(times, start - half)
    if first >= info.frames:
        raise MediaError(f"{name}: --start {start:g}s is past the end (the video lasts {info.duration:.3f}s)")
    if fps is None:
        indices = list(range(first, info.frames))
        rate = info.fps
    else:
        indices, rate = [], fps
        end = info.duration
        k = 0
        while (t := start + k / fps) < end - 1e-9 and (frames is None or len(indices) < frames):
            j = bisect.bisect_left(times, t)
            if j == info.frames or (j > 0 and t - times[j - 1] <= times[j] - t):
                j -= 1
            indices.append(max(j, first))
            k += 1
    if frames is not None:
        if len(indices) < frames:
            at = f" at {fps:g} fps" if fps else ""
            raise MediaError(f"{name}: asked for {frames} frames but only {len(indices)} are there from {start:g}s{at}")
        indices = indices[:frames]
    trimmed = padded = 0
    extra = (len(indices) - 1) % ratio
    if extra:
        if frame_policy == "error":
            raise MediaError(f"{name}: {frame_count_error(len(indices), ratio)}; or pass --frame-policy trim|pad")
        if frame_policy == "trim":
            trimmed = extra
            indices = indices[: len(indices) - extra]
        elif frame_policy == "pad":
            padded = ratio - extra
            indices = indices + [indices[-1]] * padded
        else:
            raise MediaError(f"frame policy must be error, trim or pad, got {frame_policy!r}")
    return FramePlan(tuple(indices), start, rate, trimmed, padded)


def frame_mode(resize: str, size: tuple[int, int] | None, max_area: int | None) -> str:
    """How frames reach the clip's size: `resize` for a size the user asked for, a pure
    centre crop for the one wanvae picks (the source cropped to the nearest multiples)."""
    return resize if size is not None or max_area is not None else "center-crop"


def target_size(
    width: int, height: int, size: tuple[int, int] | None = None, max_area: int | None = None, multiple: int = 8
) -> tuple[int, int]:
    """The clip's (w, h): `size` as given, or Wan's max-area rule, or the source cropped.

    `multiple` is the VAE's spatial factor (8 for Wan 2.1, 16 for Wan 2.2): a given size
    must be a multiple of it. The sizes wanvae picks itself are multiples of twice that,
    what the Wan transformers take (they patchify latents 2x2): 16 for Wan 2.1, 32 for
    Wan2.2-TI2V-5B.
    """
    pick = 2 * multiple
    if size is not None and max_area is not None:
        raise MediaError("give --size or --max-area, not both")
    if size is not None:
        w, h = size
        if w <= 0 or h <= 0 or w % multiple or h % multiple:
            from ..checks import nearest_sizes

            (w0, h0), (w1, h1) = nearest_sizes(max(w, 1), max(h, 1), multiple)
            raise MediaError(
                f"--size {w}x{h}: width and height must be positive multiples of {multiple} for this VAE "
                f"(e.g. {w0}x{h0} or {w1}x{h1})"
            )
        return w, h
    if max_area is not None:
        # Wan's pipelines: keep the aspect ratio, area at most max_area, multiples of `pick`.
        aspect = height / width
        h = int(math.sqrt(max_area * aspect) // pick * pick)
        w = int(math.sqrt(max_area / aspect) // pick * pick)
        if w < pick or h < pick:
            raise MediaError(f"--max-area {max_area} is too small for a {width}x{height} source")
        return w, h
    w, h = width // pick * pick, height // pick * pick
    if not w or not h:
        raise MediaError(f"the source is {width}x{height}; it needs at least {pick}x{pick} pixels")
    return w, h


def resize(frame: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    """[3, h, w] float -> [3, H, W]: antialiased bicubic on RGB floats, then crop or pad.

    'center-crop' (what a size wanvae picks itself uses) cuts the centre out with no
    resampling at all; it is 'crop' when the source is smaller than the size.
    """
    src_h, src_w = frame.shape[-2:]
    if mode == "center-crop":
        w, h = size
        if src_w >= w and src_h >= h:
            top, left = (src_h - h) // 2, (src_w - w) // 2
            return frame[:, top : top + h, left : left + w].contiguous()
        mode = "crop"
    if mode not in RESIZE_MODES:
        raise MediaError(f"--resize must be one of {', '.join(RESIZE_MODES)}, got {mode!r}")
    w, h = size
    if (src_w, src_h) == (w, h):
        return frame
    if mode == "stretch":
        rw, rh = w, h
    else:
        scale = (max if mode == "crop" else min)(w / src_w, h / src_h)
        rw, rh = round(src_w * scale), round(src_h * scale)
        rw, rh = (max(rw, w), max(rh, h)) if mode == "crop" else (min(rw, w), min(rh, h))
    x = frame
    if (rw, rh) != (src_w, src_h):
        x = F.interpolate(x[None], size=(rh, rw), mode="bicubic", antialias=True, align_corners=False)[0]
        x = x.clamp_(-1.0, 1.0)
    if (rw, rh) == (w, h):
        return x
    if mode == "crop":
        top, left = (rh - h) // 2, (rw - w) // 2
        return x[:, top : top + h, left : left + w].contiguous()
    out = x.new_full((3, h, w), -1.0)  # pad with black
    top, left = (h - rh) // 2, (w - rw) // 2
    out[:, top : top + rh, left : left + rw] = x
    return out


ALPHA_POLICIES = ("refuse", "black", "white")
# Not a choice on the command line: what a 4-channel (RGBA) model reads, alpha as a fourth
# plane (opaque where the source has none).
KEEP_ALPHA = "keep"
# Containers that keep alpha, with the codec and pixel format we write it in: lossless both.
ALPHA_WRITERS = {".png": ("png", "rgba"), ".mov": ("png", "rgba"), ".mkv": ("ffv1", "bgra")}


def _composite(frame, rgb: np.ndarray, alpha: str, name: str) -> np.ndarray:
    """`rgb` of a frame whose format can carry transparency: as it is when every pixel is
    opaque, else composited on the `alpha` background, or refused ('refuse')."""
    fmt = frame.format
    if not (fmt.has_palette or any(c.is_alpha for c in fmt.components)):
        return rgb
    a = frame.to_ndarray(format="rgba")[..., 3:]
    if bool((a == 255).all()):
        return rgb
    if alpha == "refuse":
        raise MediaError(
            f"{name}: has transparent pixels (an alpha channel); pass --alpha black or --alpha white "
            "to composite it on that background"
        )
    if alpha not in ALPHA_POLICIES:
        raise MediaError(f"--alpha must be one of {', '.join(ALPHA_POLICIES)}, got {alpha!r}")
    background = 0.0 if alpha == "black" else 255.0
    weight = a.astype(np.float32) / 255.0
    return np.rint(rgb.astype(np.float32) * weight + background * (1.0 - weight)).astype(np.uint8)


def _to_rgb(frame, alpha: str = "refuse", name: str = "") -> np.ndarray:
    if alpha == KEEP_ALPHA:
        rgb = _to_rgb_opaque(frame)
        fmt = frame.format
        if fmt.has_palette or any(c.is_alpha for c in fmt.components):
            a = frame.to_ndarray(format="rgba")[..., 3:]
        else:
            a = np.full(rgb.shape[:2] + (1,), 255, dtype=np.uint8)
        return np.concatenate([rgb, a], axis=2)
    return _composite(frame, _to_rgb_opaque(frame), alpha, name)


def _to_rgb_opaque(frame) -> np.ndarray:
    fmt = frame.format.name
    if fmt.startswith(("rgb", "bgr", "gbr", "pal", "argb", "abgr", "gray", "ya")):
        return frame.to_ndarray(format="rgb24")
    colorspace = _COLORSPACES.get(int(frame.colorspace or 2), "ITU601")
    full = int(frame.color_range or 0) == 2 or fmt.startswith("yuvj")
    rgb = frame.reformat(
        format="rgb24", src_colorspace=colorspace, src_color_range="JPEG" if full else "MPEG", dst_color_range="JPEG"
    )
    return rgb.to_ndarray(format="rgb24")


def read_frames(
    info: VideoInfo, plan: FramePlan, size: tuple[int, int], mode: str = "crop", alpha: str = "refuse"
) -> Iterator[Tensor]:
    """Decode the planned frames in order as [3, H, W] float tensors in [-1, 1].

    Transparent pixels are composited on `alpha` ('black' or 'white'), or refused
    ('refuse'): never dropped silently. `alpha='keep'` gives [4, H, W] frames, alpha last
    (for an RGBA model).
    """
    av = _av()
    name = Path(info.path).name
    wanted: dict[int, int] = {}
    for i in plan.indices:
        wanted[info.pts[i]] = wanted.get(info.pts[i], 0) + 1
    order = [info.pts[i] for i in plan.indices]
    emitted = 0
    with av.open(info.path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        first_pts = order[0]
        if not info.is_image and first_pts != info.pts[0]:
            container.seek(first_pts, stream=stream, backward=True, any_frame=False)
        seeked = not info.is_image and first_pts != info.pts[0]
        try:
            pending: Tensor | None = None
            for n_decoded, frame in enumerate(container.decode(stream)):
                p = frame.pts
                if p is None and not seeked:  # some image decoders leave pts unset
                    p = info.pts[min(n_decoded, info.frames - 1)]
                if p is None or p not in wanted:
                    continue
                # Frames repeat when --fps raises the rate; emit in plan order.
                while emitted < len(order) and order[emitted] == p:
                    if pending is None:
                        rgb = torch.from_numpy(_to_rgb(frame, alpha, name)).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
                        pending = resize(rgb, size, mode)
                    yield pending
                    emitted += 1
                pending = None
                if emitted == len(order) or (order[emitted] < p):
                    break
        except av.error.FFmpegError as e:
            raise MediaError(f"{name}: corrupt or truncated after {emitted} of {len(order)} frames ({_reason(e)})") from None
    # The plan may end on repeats of the last decoded frame (padding).
    if emitted < len(order):
        raise MediaError(f"{name}: the video ended after {emitted} of {len(order)} frames: truncated or corrupt")


def frame_to_uint8(frame: Tensor) -> np.ndarray:
    """[C, H, W] in [-1, 1] -> [H, W, C] uint8."""
    return frame.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def check_channels_writable(path: str | os.PathLike, channels: int) -> None:
    """Refuse, before any work, to write RGBA frames where alpha would be lost."""
    suffix = Path(path).suffix.lower()
    if channels == 4 and suffix not in ALPHA_WRITERS:
        raise MediaError(
            f"{path}: {suffix or 'this file'} cannot keep alpha (H.264 has none); write RGBA frames as .mov (PNG codec), "
            ".mkv (FFV1), or one frame as .png"
        )


class VideoWriter:
    """Writes an H.264 mp4 (or a PNG for a single frame) atomically: whole, or not at all.
    RGBA frames go into a .mov (PNG codec) or .mkv (FFV1), both lossless with alpha."""

    def __init__(self, path: str | os.PathLike, fps: float, overwrite: bool = False, crf: int = 18) -> None:
        self.path = Path(path)
        self.fps, self.crf = fps, crf
        self.frames = 0
        self.png = self.path.suffix.lower() == ".png"
        if not self.png and self.path.suffix.lower() not in (".mp4", ".mov", ".mkv"):
            raise MediaError(f"{self.path}: write a video as .mp4 (or .mov/.mkv), or one frame as .png")
        self._file = AtomicFile(self.path, overwrite=overwrite)
        fmt = "image2" if self.png else {".mov": "mov", ".mkv": "matroska"}.get(self.path.suffix.lower(), "mp4")
        self._container = _av().open(str(self._file.tmp), mode="w", format=fmt, options={"update": "1"} if self.png else {})
        self._stream = None

    def __enter__(self) -> VideoWriter:
        return self

    def write(self, frame: Tensor) -> None:
        """One [3, H, W] frame in [-1, 1] ([4, H, W] with alpha)."""
        av = _av()
        if self.png and self.frames:
            raise MediaError(f"{self.path}: a PNG holds one frame; write an .mp4 for a video")
        rgb = frame_to_uint8(frame)
        if rgb.shape[2] == 4:
            return self._write_rgba(rgb)
        if self._stream is None:
            h, w = rgb.shape[:2]
            if self.png:
                self._stream = self._container.add_stream("png", rate=1)
                self._stream.pix_fmt = "rgb24"
            else:
                self._stream = self._container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
                self._stream.pix_fmt = "yuv420p"
                self._stream.options = {"crf": str(self.crf)}
                # Say which matrix we used, so players (and our reader) undo the same one.
                cc = self._stream.codec_context
                cc.colorspace, cc.color_range = 6, 1  # SMPTE170M (BT.601), limited range
            self._stream.width, self._stream.height = w, h
        out = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        if not self.png:
            out = out.reformat(format="yuv420p", dst_colorspace="ITU601", dst_color_range="MPEG")
            out.colorspace, out.color_range = 6, 1
        for packet in self._stream.encode(out):
            self._container.mux(packet)
        self.frames += 1

    def _write_rgba(self, rgba: np.ndarray) -> None:
        av = _av()
        if self._stream is None:
            check_channels_writable(self.path, 4)
            codec, pix_fmt = ALPHA_WRITERS[self.path.suffix.lower()]
            self._stream = self._container.add_stream(codec, rate=1 if self.png else Fraction(self.fps).limit_denominator(1001))
            self._stream.pix_fmt = pix_fmt
            self._stream.width, self._stream.height = rgba.shape[1], rgba.shape[0]
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(rgba, format="rgba")):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> Path:
        """Finish the file and move it into place."""
        try:
            if self.frames == 0:
                raise MediaError(f"{self.path}: no frames to write")
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            return self._file.commit()
        finally:
            self.discard()

    def discard(self) -> None:
        try:
            self._container.close()
        except Exception:
            pass
        self._file.discard()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()
