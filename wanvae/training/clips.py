"""Training and demo clips: photos moved by a synthetic camera, procedural scenes, real videos.

All clips are [3, T, H, W] float tensors in [-1, 1], drawn deterministically from a
`torch.Generator`, so a seed reproduces a data stream exactly.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..io import video
from ..io.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES


def load_image(path: str | os.PathLike) -> Tensor:
    """An image file as [3, H, W] in [-1, 1] (through the same decoder as videos)."""
    info = video.probe(path)
    return next(video.read_frames(info, video.plan_frames(info, frames=1), (info.width, info.height)))


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=g).item()


def camera_clip(
    image: Tensor,
    frames: int,
    size: tuple[int, int],
    g: torch.Generator,
    strength: float = 1.0,
    any_scale: bool = False,
    magnify: float = 1.0,
) -> Tensor:
    """A still image seen by a moving camera: a smooth pan, zoom and roll between two poses.

    The view covers 45% to all of the image's shorter side, or with `any_scale` anything from
    the image's own pixels (zoom log-uniform) up to all of it: a small training crop of a big
    photo otherwise only ever shows it shrunk several times, never at the scale of the
    held-out clips, whose detail per pixel differs. `magnify` (with `any_scale`) lets the
    closest view show each image pixel up to that many clip pixels wide: a clip of a
    256-pixel frame shows a 300-pixel photo magnified, smooth at the pixel level, and a model
    trained only on shrunk photos spends its capacity on denser detail than that.
    """
    w, h = size
    _, ih, iw = image.shape
    # The view covers at most the image; its aspect is the clip's.
    base = min(iw / w, ih / h)
    if any_scale:
        lowest = min(1.0, 1.0 / (base * magnify))  # zoom at which one image pixel is `magnify` clip pixels
        start_zoom = math.exp(_uniform(g, math.log(lowest), 0.0))
        end_zoom = min(1.0, max(lowest, start_zoom * math.exp(_uniform(g, -0.35, 0.35))))
    else:
        start_zoom, end_zoom = (_uniform(g, 0.45, 1.0) for _ in range(2))
    angle0, angle1 = (_uniform(g, -0.15, 0.15) * strength for _ in range(2))
    centre0 = [_uniform(g, -0.3, 0.3) * strength for _ in range(2)]
    centre1 = [c + _uniform(g, -0.25, 0.25) * strength for c in centre0]
    thetas = []
    for t in torch.linspace(0, 1, frames).tolist():
        ease = 0.5 - 0.5 * math.cos(math.pi * t)
        zoom = start_zoom + (end_zoom - start_zoom) * ease
        angle = angle0 + (angle1 - angle0) * ease
        cx = centre0[0] + (centre1[0] - centre0[0]) * ease
        cy = centre0[1] + (centre1[1] - centre0[1]) * ease
        sx, sy = zoom * base * w / iw, zoom * base * h / ih
        c, s = math.cos(angle), math.sin(angle)
        thetas.append([[sx * c, -sy * s * ih / iw, cx * (1 - zoom)], [sx * s * iw / ih, sy * c, cy * (1 - zoom)]])
    theta = torch.tensor(thetas, dtype=image.dtype)
    grid = F.affine_grid(theta, [frames, 3, h, w], align_corners=False)
    # Antialias first when the view shrinks the image a lot, then sample bilinearly. The
    # view shows zoom * base image pixels per clip pixel; prefiltering to the closer pose
    # keeps the shrinking left to the bilinear sampler under 2x without blurring that pose.
    scale = min(start_zoom, end_zoom) * base
    src = image
    if scale > 2:
        src = F.interpolate(image[None], scale_factor=1 / (scale / 2), mode="bilinear", antialias=True)[0]
    out = F.grid_sample(src.expand(frames, -1, -1, -1), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return out.clamp(-1, 1).transpose(0, 1).contiguous()  # [3, T, H, W]


def procedural_clip(frames: int, size: tuple[int, int], g: torch.Generator) -> Tensor:
    """Soft shapes drifting over a colour gradient, with a little texture."""
    w, h = size
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    c0, c1 = torch.rand(3, generator=g) * 2 - 1, torch.rand(3, generator=g) * 2 - 1
    angle = _uniform(g, 0, math.pi)
    ramp = (xx * math.cos(angle) + yy * math.sin(angle)) * 0.5 + 0.5
    background = c0.view(3, 1, 1) * (1 - ramp) + c1.view(3, 1, 1) * ramp
    shapes = []
    for _ in range(int(torch.randint(2, 6, (), generator=g))):
        shapes.append(
            dict(
                colour=torch.rand(3, generator=g) * 2 - 1,
                pos=torch.rand(2, generator=g) * 1.6 - 0.8,
                vel=(torch.rand(2, generator=g) - 0.5) * 0.12,
                radius=_uniform(g, 0.12, 0.45),
                square=bool(torch.rand((), generator=g) < 0.5),
                freq=_uniform(g, 2, 12),
            )
        )
    out = []
    for t in range(frames):
        frame = background.clone()
        for s in shapes:
            px, py = (s["pos"] + s["vel"] * t).tolist()
            dx, dy = xx - px, yy - py
            dist = torch.maximum(dx.abs(), dy.abs()) if s["square"] else (dx**2 + dy**2).sqrt()
            mask = torch.sigmoid((s["radius"] - dist) * 40)
            texture = 0.15 * torch.sin(s["freq"] * (dx + dy) * math.pi)
            frame = frame * (1 - mask) + (s["colour"].view(3, 1, 1) + texture) * mask
        out.append(frame)
    return torch.stack(out, dim=1).clamp(-1, 1)


def dead_leaves_image(size: tuple[int, int], g: torch.Generator, palette: Tensor | None = None) -> Tensor:
    """A dead-leaves picture [3, H, W]: occluding discs with power-law radii.

    Its statistics are close to natural images' (scale invariance, sharp occlusion edges,
    flat regions), so a model trained on it generalises to photos far better than one
    trained on a handful of photos alone, and there is no end of it. Colours come from
    `palette` ([N, 3] in [-1, 1], e.g. pixels of the training photos) when given; some
    leaves carry a gradient or a stripe texture, and a few are blurred.
    """
    w, h = size
    img = (torch.rand(3, 1, 1, generator=g) * 2 - 1).expand(3, h, w).clone()
    r_min, r_max = 1.5, max(w, h) / 3
    # Enough leaves to cover the picture about 4 times over (e^-4: 2% left bare). For
    # p(r) ~ r^-3 the mean leaf area is 2 pi r_min^2 ln(r_max / r_min).
    count = int(4 * w * h / (2 * math.pi * r_min**2 * math.log(r_max / r_min))) + 8
    # p(r) ~ r^-3 between r_min and r_max, drawn by inverting its distribution function.
    u = torch.rand(count, generator=g)
    radii = (r_min**-2 - u * (r_min**-2 - r_max**-2)) ** -0.5
    centres = torch.rand(count, 2, generator=g) * torch.tensor([w, h])
    if palette is not None and len(palette):
        colours = palette[torch.randint(0, len(palette), (count,), generator=g)]
    else:
        colours = torch.rand(count, 3, generator=g) * 2 - 1
    kinds = torch.rand(count, generator=g)
    angles = torch.rand(count, generator=g) * math.pi
    freqs = torch.rand(count, generator=g) * 0.8 + 0.1
    # Painted back to front: each leaf covers what was there.
    for r, (cx, cy), colour, kind, angle, freq in zip(radii.tolist(), centres.tolist(), colours, kinds.tolist(), angles.tolist(), freqs.tolist()):
        x0, x1 = max(0, int(cx - r)), min(w, int(cx + r) + 2)
        y0, y1 = max(0, int(cy - r)), min(h, int(cy + r) + 2)
        if x0 >= x1 or y0 >= y1:
            continue
        yy = torch.arange(y0, y1, dtype=torch.float32).view(-1, 1) - cy
        xx = torch.arange(x0, x1, dtype=torch.float32).view(1, -1) - cx
        inside = ((r - (xx * xx + yy * yy).sqrt()) + 0.5).clamp(0, 1)  # one-pixel soft edge
        along = xx * math.cos(angle) + yy * math.sin(angle)
        fill = colour.view(3, 1, 1).expand(3, y1 - y0, x1 - x0)
        if kind < 0.25:  # a shading gradient across the leaf
            fill = fill + 0.5 * (along / max(r, 1.0)).unsqueeze(0)
        elif kind < 0.4:  # a stripe texture
            fill = fill + 0.25 * torch.sin(along * freq).unsqueeze(0)
        region = img[:, y0:y1, x0:x1]
        region.mul_(1 - inside).add_(fill * inside)
    if torch.rand((), generator=g).item() < 0.3:  # some pictures out of focus
        img = F.avg_pool2d(img[None], 3, 1, 1, count_include_pad=False)[0]
    return img.clamp(-1, 1)


def recolour(clip: Tensor, g: torch.Generator) -> Tensor:
    """`clip` [3, T, H, W] in new colours: its channels shuffled, then blended with a duotone
    of its brightness (a random dark colour to a random light one).

    Most freely licensed photos are grey (8 of scikit-image's 13), and a model trained on
    them learns that colour barely exists: it returned grey for saturated scenes. This gives
    every picture, grey or not, colours it never had, keeping its structure and contrast.
    """
    x = (clip[torch.randperm(3, generator=g)] + 1) / 2
    brightness = x.mean(0, keepdim=True)
    dark = (torch.rand(3, generator=g) * 0.4).view(3, 1, 1, 1)
    light = (0.6 + torch.rand(3, generator=g) * 0.4).view(3, 1, 1, 1)
    duotone = dark + (light - dark) * brightness
    blend = _uniform(g, 0.3, 1.0)
    return (x * (1 - blend) + duotone * blend) * 2 - 1


# An orthonormal basis of the plane orthogonal to grey (1, 1, 1): moving a pixel within
# it changes its colour and leaves its brightness (the channel mean) alone.
_CHROMA_BASIS = torch.tensor([[1.0, -1.0, 0.0], [1.0, 1.0, -2.0]]) / torch.tensor([[2.0**0.5], [6.0**0.5]])


def shift_chroma(x: Tensor, g: torch.Generator, max_field: float = 0.35) -> Tensor:
    """`x` [3, ..., H, W] with its colours moved and its brightness kept: hue rotated by a
    random angle, saturation scaled, and a smooth random colour field added (a few cells
    across, the same in every frame).

    `recolour` puts all of a picture's pixels on one line of colours, so a model trained
    on it learns one hue per region that follows brightness; real scenes have colour that
    varies independently of brightness (green eyes in brown fur), and that model turned
    them pink. Here colour varies in space on its own, as in natural images.
    """
    basis = _CHROMA_BASIS.to(x.dtype)  # [2, 3]
    grey = x.mean(0, keepdim=True)
    chroma = torch.einsum("kc,c...->k...", basis, x - grey)  # [2, ..., H, W]
    angle = _uniform(g, 0.0, 2 * math.pi)
    cos, sin = math.cos(angle), math.sin(angle)
    saturation = math.exp(_uniform(g, math.log(0.5), math.log(2.0)))
    a, b = chroma[0], chroma[1]
    chroma = torch.stack([cos * a - sin * b, sin * a + cos * b]) * saturation
    cells = int(torch.randint(1, 7, (), generator=g))
    coarse = torch.randn(1, 2, cells, cells, generator=g, dtype=x.dtype) * _uniform(g, 0.0, max_field)
    field = F.interpolate(coarse, size=x.shape[-2:], mode="bicubic", align_corners=False)[0]  # [2, H, W]
    chroma = chroma + field.view(2, *([1] * (x.dim() - 3)), *x.shape[-2:])
    return (grey + torch.einsum("kc,k...->c...", basis, chroma)).clamp(-1, 1)


def image_palette(images: list[Tensor], per_image: int = 4096, seed: int = 0) -> Tensor | None:
    """Random pixels [N, 3] of `images`: natural colours for dead-leaves pictures."""
    if not images:
        return None
    g = torch.Generator().manual_seed(seed)
    picks = []
    for image in images:
        flat = image.reshape(3, -1)
        picks.append(flat[:, torch.randint(0, flat.shape[1], (per_image,), generator=g)].T)
    return torch.cat(picks)


def video_clip(path: str | os.PathLike, frames: int, size: tuple[int, int], g: torch.Generator) -> Tensor | None:
    """A random window of a real video, cover-resized and centre-cropped; None if too short."""
    info = video.probe(path)
    if info.frames < frames:
        return None
    start = int(torch.randint(0, info.frames - frames + 1, (), generator=g))
    plan = video.FramePlan(tuple(range(start, start + frames)), info.seconds(start), info.fps)
    return torch.stack(list(video.read_frames(info, plan, size, "crop")), dim=1)


def find_media(folder: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """Images and videos under `folder`, sorted for determinism."""
    images, videos = [], []
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                images.append(p)
            elif p.suffix.lower() in VIDEO_SUFFIXES:
                videos.append(p)
    return images, videos


def random_crop(clip: Tensor, size: tuple[int, int], g: torch.Generator) -> Tensor:
    """The same random W x H window of every frame of `clip` [3, T, H', W']."""
    (w, h), (cw, ch) = size, (clip.shape[-1], clip.shape[-2])
    x = int(torch.randint(0, cw - w + 1, (), generator=g))
    y = int(torch.randint(0, ch - h + 1, (), generator=g))
    return clip[..., y : y + h, x : x + w].contiguous()


class ClipSampler:
    """Random training clips from a folder: photos in camera motion, videos, dead-leaves
    pictures in camera motion, and procedural scenes.

    With `view` (W, H), photos are filmed and videos resized at that size and a random crop
    of the clip's size is kept: a small crop then moves as many pixels per frame, and shows
    photos at the same scale, as a full frame of the view's size (held-out 256x256 clips
    moved 2.7x more pixels per frame than 96x96 training clips filmed whole).
    """

    def __init__(
        self,
        folder: str | os.PathLike | None,
        procedural: float = 0.15,
        dead_leaves: float = 0.35,
        any_scale: bool = False,
        recolour: float = 0.0,
        chroma: float = 0.0,
        magnify: float = 1.0,
        view: tuple[int, int] | None = None,
    ) -> None:
        self.any_scale = any_scale
        self.magnify = magnify
        self.view = view
        self.recolour = recolour
        self.chroma = chroma
        self.images: list[Tensor] = []
        self.videos: list[Path] = []
        if folder is not None:
            image_paths, self.videos = find_media(folder)
            self.images = [load_image(p) for p in image_paths]
            if not self.images and not self.videos:
                raise ValueError(f"{folder}: no images or videos found")
        has_media = bool(self.images or self.videos)
        self.procedural = procedural if has_media else 1.0 - dead_leaves
        self.dead_leaves = dead_leaves
        self.palette = image_palette(self.images)

    def sample(self, frames: int, size: tuple[int, int], g: torch.Generator) -> Tensor:
        # Drawn only when asked for, so a stream without it is the one earlier sittings saw.
        shift = bool(self.chroma) and torch.rand((), generator=g).item() < self.chroma

        def film(picture: Tensor, at: tuple[int, int]) -> Tensor:
            # Colour shifted on the still picture, so its colour field moves with the scene.
            if shift:
                picture = shift_chroma(picture, g)
            return camera_clip(picture, frames, at, g, any_scale=self.any_scale, magnify=self.magnify)

        pick = torch.rand((), generator=g).item()
        filmed = False
        if pick < self.procedural:
            clip = procedural_clip(frames, size, g)
        elif pick < self.procedural + self.dead_leaves:
            w, h = size
            # Drawn larger than the clip so the camera can pan and zoom across it. Not filmed
            # at the view: a picture that big costs more to draw than a training step.
            clip, filmed = film(dead_leaves_image((2 * w, 2 * h), g, self.palette), size), True
        elif self.videos and (not self.images or torch.rand((), generator=g).item() < 0.5):
            path = self.videos[int(torch.randint(0, len(self.videos), (), generator=g))]
            clip = video_clip(path, frames, self.view or size, g)
            if clip is None:
                clip = procedural_clip(frames, size, g)
            elif self.view is not None:
                clip = random_crop(clip, size, g)
        else:
            photo = self.images[int(torch.randint(0, len(self.images), (), generator=g))]
            clip, filmed = film(photo, self.view or size), True
            if self.view is not None:
                clip = random_crop(clip, size, g)
        if shift and not filmed:
            clip = shift_chroma(clip, g)
        if torch.rand((), generator=g).item() < 0.5:
            clip = clip.flip(-1)
        if self.recolour and torch.rand((), generator=g).item() < self.recolour:
            clip = recolour(clip, g)
        return clip
