"""The building blocks of the Wan VAEs (2.1 and 2.2 are built from the same ones).

Attribute names follow the original checkpoint (`residual.0.gamma`, `residual.2.weight`,
`to_qkv`, `proj`, `resample.1`, `time_conv`, ...) so weights load strictly with no key map.
Every block's forward takes `(x, ctx)`: `x` is [B, C, T, H, W] and `ctx` the step's
`StepContext`, through which temporal layers read and write their look-back frames.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..coding.state import StepContext, constant_tail, prepend_history, roll_history, tail_key
from .kernels import EAGER, REDUCED, Kernels, gain, inverse_norm, norm_input, rms_norm
from .routes import CHANNELS_LAST, conv3d, to_layout


class PointwiseConv3d(nn.Conv3d):
    """A 1x1x1 conv (no history), routed like every other conv (see `conv3d`)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__(in_dim, out_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return conv3d(x, self.weight, self.bias)


class StatefulLayer(nn.Module):
    """A layer that keeps look-back frames or tile seams, under `state_key`: its module path."""

    state_key: str = ""


class CausalConv3d(nn.Conv3d, StatefulLayer):
    """A conv that sees `kernel_t - 1` frames back and none ahead.

    Spatial padding is done by the conv itself (oneDNN is faster that way than on a
    pre-padded copy); the temporal padding is the layer's history, zeros at stream start.
    `forward` picks one of four paths, each a method of its own and each equal to the
    plain one (`history_conv`) on its inputs:

    - `fused_input_conv`: the norm before the conv writes into the conv's input buffer,
      right after the look-back frames (whole frames, no autograd);
    - `first_frame_conv`: nothing to look back on and one frame: a 2D conv;
    - `constant_tail_conv`: image-to-video conditioning, a repeated frame computed once;
    - `history_conv`: the look-back frames prepended, one 3D conv.
    """

    def __init__(self, in_dim: int, out_dim: int, kernel: tuple[int, int, int], spatial_pad: int) -> None:
        super().__init__(in_dim, out_dim, kernel, padding=(0, spatial_pad, spatial_pad))
        self.lookback = kernel[0] - 1

    def forward(self, x: Tensor, ctx: StepContext, pre: RMSNorm | None = None, overwrite: bool = False) -> Tensor:  # [B, C, T, H, W]
        """The conv of SiLU(pre(x)) (`pre`: the norm before it; `overwrite`: x may hold its output)."""
        tail = ctx.history(tail_key(self.state_key))  # read always: valid only for the next step
        if pre is not None and self.fuses_input(x, ctx):
            return self.fused_input_conv(x, ctx.history(self.state_key), ctx, pre, overwrite)
        if pre is not None:
            x = pre.silu(x, overwrite=overwrite)
        history = ctx.history(self.state_key)
        if history is None and x.shape[2] == 1 and self.lookback:
            x, padding = ctx.conv_input(x, self.state_key, self.padding[1])
            if ctx.record:
                ctx.keep(self.state_key, roll_history(x, None, self.lookback))
            return self.first_frame_conv(x, padding)
        frames, have = x.shape[2], 0 if history is None else history.shape[2]
        # The look-back frames and a tile's seams go into one buffer with x (rebinding frees
        # the bare input before the conv allocates its output); the state keeps the last
        # real frames, as `roll_history` would.
        x, padding = ctx.conv_input(x, self.state_key, self.padding[1], history, self.lookback)
        del history
        if self.lookback and ctx.record:
            ctx.keep(self.state_key, x[:, :, -min(self.lookback, have + frames) :].clone())
        if ctx.skip_constant and self.lookback:
            return self.constant_tail_conv(x, frames, padding, tail, ctx)
        return self.history_conv(x, padding)

    def fuses_input(self, x: Tensor, ctx: StepContext) -> bool:
        """Whether the norm's output may be written into the conv's input buffer: on whole
        frames (a tile's input takes its seams first), with no autograd graph to keep and
        no constant tail to find, and unless this is the 2D first-frame case."""
        return bool(
            self.lookback and ctx.whole_frames and not ctx.skip_constant and not torch.is_grad_enabled()
            and (x.shape[2] > 1 or ctx.has_history(self.state_key))
        )

    def history_conv(self, s: Tensor, padding: tuple[int, int, int]) -> Tensor:
        """The plain path: `s` is the look-back frames then the step's frames."""
        return conv3d(s, self.weight, self.bias, padding=padding)

    def first_frame_conv(self, x: Tensor, padding: tuple[int, int, int]) -> Tensor:
        """One frame with zero look-back: only the kernel's last temporal slice touches real
        data, so the stream's first frame (and every image) is a 2D conv at a third the cost."""
        y = F.conv2d(x[:, :, 0], self.weight[:, :, -1], self.bias, padding=padding[1:])
        return y.unsqueeze(2)

    def constant_tail_conv(self, s: Tensor, frames: int, padding: tuple[int, int, int], tail: Tensor | None, ctx: StepContext) -> Tensor:
        """`history_conv` of `s` with the frames of its constant tail computed once (see
        `conv_constant_tail`); `frames` outputs."""
        run = lambda v: self.history_conv(v, padding)  # noqa: E731
        return conv_constant_tail(run, s, frames, 1, self.lookback + 1, tail, ctx, tail_key(self.state_key))

    def fused_input_conv(self, x: Tensor, history: Tensor | None, ctx: StepContext, pre: RMSNorm, overwrite: bool) -> Tensor:
        """The conv of SiLU(pre(x)) after the look-back frames, `pre` writing its output into
        the conv's input buffer instead of making a tensor that a concatenation then copies
        (a full-size copy per conv: the concatenations were 5% of an encode's profile,
        though the wall-clock gain on its own was within run-to-run noise). Compiled
        kernels write that buffer themselves."""
        b, c, t, h, w = x.shape
        lead, have = self.lookback, 0 if history is None else history.shape[2]
        if pre.kernels.compiled or torch.compiler.is_compiling():  # functional code traces whole
            x = to_layout(x)
            buf = pre.kernels.lead_norm_silu(to_layout(prepend_history(x[:, :, :0], history, lead)), x, gain(pre.gamma))
            del history
            if ctx.record:
                ctx.keep(self.state_key, buf[:, :, -lead:].clone())
            return conv3d(buf, self.weight, self.bias, padding=self.padding)
        buf = torch.empty(b, c, lead + t, h, w, dtype=x.dtype, device=x.device, memory_format=CHANNELS_LAST)
        if have < lead:
            buf[:, :, : lead - have].zero_()  # frames before the stream's start
        if have:
            buf[:, :, lead - have : lead] = history
        del history
        pre.silu(x, overwrite=overwrite, out=buf[:, :, lead:])
        if ctx.record:
            ctx.keep(self.state_key, buf[:, :, -lead:].clone())
        return conv3d(buf, self.weight, self.bias, padding=self.padding)


class RMSNorm(nn.Module):
    """L2-normalise over channels, times sqrt(C) and a learned per-channel gain.

    `gamma` is [C, 1, 1, 1] for 5-D input and [C, 1, 1] for the attention's per-frame
    4-D input, as in the checkpoint. fp16 and bf16 inputs are normalised in fp32.
    """

    # The functions the math runs through; `WanVAE.compile` swaps in compiled ones.
    kernels: Kernels = EAGER

    def __init__(self, dim: int, images: bool = False) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim, 1, 1) if images else torch.ones(dim, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.gamma)

    def silu(self, x: Tensor, overwrite: bool = False, out: Tensor | None = None) -> Tensor:
        """SiLU(norm(x)), in place on one fresh tensor when no graph is recorded.

        Every residual block and head runs norm then SiLU; fusing them into one
        allocation and in-place passes saves two full-size tensors and their memory
        traffic per call (the unfused ops were about a fifth of encode time). With
        `overwrite`, `x` itself (which the caller no longer needs) holds the result;
        with `out`, that tensor (a conv's input buffer) does. Compiled kernels fuse
        it all themselves.
        """
        if torch.is_grad_enabled() or self.kernels.compiled or torch.compiler.is_compiling():
            # One layout in, so a compiled graph is not recompiled for each layout it meets.
            y = self.kernels.norm_silu(to_layout(x) if self.kernels.compiled else x, gain(self.gamma))
            return y if out is None else out.copy_(y)
        if x.dtype in REDUCED:
            # The reference's (xf * inv).to(dtype), written straight into the reduced output:
            # the product is computed in fp32 (type promotion) and rounded once on the write,
            # so the numbers are the same without an fp32 product and a cast (12 of 36 bytes an
            # element on a GPU). bf16 widens to fp32 exactly, so the product can read x itself
            # and the fp32 copy lives only for the reduction; fp16 multiplies its clamped copy
            # (an overflowed activation must stay finite).
            xf = norm_input(x)
            inv = inverse_norm(xf)
            source = x if x.dtype == torch.bfloat16 else xf
            if x.dtype == torch.bfloat16:
                del xf
            if out is None:
                out = x if overwrite else torch.empty_like(x)
            y = torch.mul(source, inv, out=out)
        else:
            inv = inverse_norm(x)
            if out is not None:
                y = torch.mul(x, inv, out=out)
            else:
                y = x.mul_(inv) if overwrite else x * inv
        return F.silu(y.mul_(self.gamma), inplace=True)


class ResidualBlock(StatefulLayer):
    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            RMSNorm(in_dim),
            nn.SiLU(),
            CausalConv3d(in_dim, out_dim, (3, 3, 3), 1),
            RMSNorm(out_dim),
            nn.SiLU(),
            nn.Dropout(dropout),
            CausalConv3d(out_dim, out_dim, (3, 3, 3), 1),
        )
        # 1x1x1: no temporal extent, hence no history.
        self.shortcut = PointwiseConv3d(in_dim, out_dim) if in_dim != out_dim else nn.Identity()

    def forward(self, x: Tensor, ctx: StepContext) -> Tensor:  # [B, C, T, H, W]
        norm1, _, conv1, norm2, _, drop, conv2 = self.residual  # SiLUs fused into the norms
        # On a tile the two convs lag by one position each: the shortcut waits for them.
        h = ctx.delay(self.shortcut(x), self.state_key + ".shortcut", lag=2)
        y = conv1(x, ctx, pre=norm1)
        # conv1's output is needed only here: normalised in place where no buffer takes
        # it, and gone before conv2 allocates (one full-size tensor fewer at the peak).
        if drop.p and drop.training:
            y = conv2(drop(norm2.silu(y, overwrite=True)), ctx)
        else:
            y = conv2(y, ctx, pre=norm2, overwrite=True)
        return y.add_(h)


class AttentionBlock(nn.Module):
    """Single-head self-attention over the H*W positions of each frame separately."""

    # Frames attended per call: bounds the q/k/v buffers at high resolution.
    frames_per_call = 4

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor, ctx: StepContext | None = None) -> Tensor:  # [B, C, T, H, W]
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)  # [B*T, C, H, W], a view when channels-last
        out = torch.cat([self._attend(f) for f in frames.split(self.frames_per_call)])
        return out.view(b, t, c, h, w).transpose(1, 2) + x

    def _attend(self, x: Tensor) -> Tensor:  # [N, C, H, W]
        if self.norm.kernels.compiled:
            x = x.contiguous(memory_format=torch.channels_last)
        weights = (self.norm.gamma, self.to_qkv.weight, self.to_qkv.bias, self.proj.weight, self.proj.bias)
        return self.norm.kernels.attend(x, *map(gain, weights))


def conv_constant_tail(
    run: Callable[[Tensor], Tensor], s: Tensor, outputs: int, stride: int, window: int,
    tail: Tensor | None, ctx: StepContext, key: str,
) -> Tensor:
    """`run` (a temporal conv with no padding in time) over `s`, each frame of s's constant
    tail computed once.

    Output j reads s[stride*j : stride*j + window]; once that window lies in the constant
    tail, every later output is the same frame: it is computed once and repeated, and kept
    under `key` for the next step. When the whole of `s` is that tail, the frame kept by
    the step before is the answer (s then repeats the frame its tail was made of: this
    step's look-back frames are that tail's last frames). Repeating one computed frame,
    rather than recomputing it in convs of other lengths (whose rounding differs), keeps
    the next layer's input exactly constant, so the saving reaches down the network.
    """
    c = constant_tail(s)
    first = -(-c // stride)  # the first output whose window is all tail
    if first >= outputs:
        return run(s)
    if first == 0 and tail is not None:
        head, frame = None, tail
    else:
        y = run(s[:, :, : stride * first + window])  # outputs 0 .. first
        head, frame = y[:, :, :first], y[:, :, first:].clone(memory_format=CHANNELS_LAST)
        del y
    ctx.keep(key, frame)
    out = torch.empty(*frame.shape[:2], outputs, *frame.shape[3:], dtype=frame.dtype, device=frame.device, memory_format=CHANNELS_LAST)
    if head is not None and first:
        out[:, :, :first] = head
    out[:, :, first:] = frame
    return out


def _conv_frames(conv: nn.Conv2d, x: Tensor, padding: tuple[int, int, int], ctx: StepContext, key: str) -> Tensor:
    """A Conv2d applied to every frame of [B, C, T, H, W], without reshaping to 4-D.

    The same weights as a (1, k, k) Conv3d: no transposes or copies of the activation.
    """
    run = lambda s: conv3d(s, conv.weight.unsqueeze(2), conv.bias, stride=(1, *conv.stride), padding=padding)  # noqa: E731
    if ctx.skip_constant:
        # Per-frame, so a kept tail frame is valid only for the very input it came from.
        kept = ctx.history(tail_key(key))
        source = ctx.history(tail_key(key) + ".input")
        last = x[:, :, -1:]
        tail = kept if source is not None and torch.equal(source, last) else None
        ctx.keep(tail_key(key) + ".input", last.clone(memory_format=CHANNELS_LAST))
        return conv_constant_tail(run, x, x.shape[2], 1, 1, tail, ctx, tail_key(key))
    return run(x)


class Upsample2x(nn.Module):
    """Nearest x2 in H and W (the reference's 'nearest-exact', which at x2 is plain repeat)."""

    def forward(self, x: Tensor) -> Tensor:  # [B, C, T, H, W]
        return F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest-exact")


class Resample(StatefulLayer):
    """Halve or double H and W, and for the '3d' modes also time.

    downsample3d: the stream's first frame passes through; every later output frame is a
    (3, 1, 1) stride-2 conv over (previous last frame, two new frames).
    upsample3d: a causal (3, 1, 1) conv doubles the channels, which are interleaved into
    twice the frames. The stream's first frame skips it (one frame stays one frame) and
    the conv starts with zero history from the second frame on: the reference's quirk.
    """

    def __init__(self, dim: int, mode: str, out_dim: int | None = None) -> None:
        """`out_dim`: what an up-sampler's conv hands on (Wan 2.1 halves `dim`, Wan 2.2 keeps it)."""
        super().__init__()
        self.mode = mode
        if mode in ("upsample2d", "upsample3d"):
            self.resample = nn.Sequential(Upsample2x(), nn.Conv2d(dim, dim // 2 if out_dim is None else out_dim, 3, padding=1))
            if mode == "upsample3d":
                self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), 0)
        elif mode in ("downsample2d", "downsample3d"):
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
            if mode == "downsample3d":
                self.time_conv = nn.Conv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))
        else:
            raise ValueError(f"unknown resample mode {mode!r}")

    def forward(self, x: Tensor, ctx: StepContext) -> Tensor:  # [B, C, T, H, W]
        if self.mode == "upsample3d":
            x = self._double_time(x, ctx)
        key = self.state_key + ".resample"
        if self.mode.startswith("upsample"):
            x, padding = ctx.conv_input(self.resample[0](x), key, 1)
            return _conv_frames(self.resample[1], x, padding, ctx, key)
        # Zero-pad right and bottom only, then a valid stride-2 conv: the reference's
        # asymmetric padding.
        x = _conv_frames(self.resample[1], ctx.window_input(x, key, 3, 2, 0, 1), (0, 0, 0), ctx, key)
        if self.mode == "downsample3d":
            x = self._halve_time(x, ctx)
        return x

    def _double_time(self, x: Tensor, ctx: StepContext) -> Tensor:
        head = x[:, :, :1] if ctx.at_start else None
        body = x[:, :, 1:] if ctx.at_start else x
        if body.shape[2] == 0:
            return x
        b, c, t, h, w = body.shape
        y = self.time_conv(body, ctx)  # [B, 2C, T, H, W]
        # Channels [0, C) become frame 2i, [C, 2C) frame 2i + 1.
        lead = 0 if head is None else 1
        out = torch.empty(b, c, lead + 2 * t, h, w, dtype=y.dtype, device=y.device, memory_format=CHANNELS_LAST)
        if head is not None:
            out[:, :, :1] = head
        out[:, :, lead::2] = y[:, :c]
        out[:, :, lead + 1 :: 2] = y[:, c:]
        return out

    def _halve_time(self, x: Tensor, ctx: StepContext) -> Tensor:
        key = self.state_key + ".time_conv"
        history = ctx.history(key)
        tail = ctx.history(tail_key(key))
        if ctx.record:
            ctx.keep(key, x[:, :, -1:].clone())
        if history is not None:
            s = torch.cat([history, x], dim=2)
            if ctx.skip_constant:
                return conv_constant_tail(self._time_conv, s, x.shape[2] // 2, 2, 3, tail, ctx, tail_key(key))
            return self._time_conv(s)
        if x.shape[2] < 3:
            return x[:, :, :1]
        return torch.cat([x[:, :, :1], self._time_conv(x)], dim=2)

    def _time_conv(self, x: Tensor) -> Tensor:
        return conv3d(x, self.time_conv.weight, self.time_conv.bias, stride=self.time_conv.stride)


# ---- Wan 2.2: the patchify around the network and the shortcuts around its levels ----------
def patchify(x: Tensor, p: int) -> Tensor:
    """[B, C, T, H, W] -> [B, C*p*p, T, H/p, W/p], channel c*p*p + col*p + row (the reference's
    `b c f (h q) (w r) -> b (c r q) f h w`), written channels-last for the first conv."""
    if p == 1:
        return x
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t, h // p, p, w // p, p).permute(0, 2, 3, 5, 1, 6, 4)  # [B, T, h, w, C, col, row]
    return x.reshape(b, t, h // p, w // p, c * p * p).permute(0, 4, 1, 2, 3)


def unpatchify(x: Tensor, p: int) -> Tensor:
    """The inverse of `patchify`: [B, C*p*p, T, h, w] -> [B, C, T, h*p, w*p]."""
    if p == 1:
        return x
    b, cp, t, h, w = x.shape
    x = x.reshape(b, cp // (p * p), p, p, t, h, w).permute(0, 1, 4, 5, 3, 6, 2)  # [B, C, T, h, row, w, col]
    return x.reshape(b, cp // (p * p), t, h * p, w * p)


def pixel_shuffle_frames(x: Tensor, r: int) -> Tensor:
    """`F.pixel_shuffle` of each frame: [B, C*r*r, T, h, w] -> [B, C, T, h*r, w*r], channel
    c*r*r + row*r + col (rows first: the other way round from `unpatchify`)."""
    if r == 1:
        return x
    b, cr, t, h, w = x.shape
    x = x.reshape(b, cr // (r * r), r, r, t, h, w).permute(0, 1, 4, 5, 2, 6, 3)  # [B, C, T, h, row, w, col]
    return x.reshape(b, cr // (r * r), t, h * r, w * r)


class AvgDown3d(StatefulLayer):
    """The parameter-free shortcut around a Wan 2.2 encoder level.

    Fold each (factor_t, factor_s, factor_s) cell of time, rows and columns into channels
    (c, t, row, col order), then average consecutive groups of channels down to `out_dim`.
    Time is zero-padded in front to a multiple of factor_t, as in the reference: only the
    stream's first chunk (one frame, after which every chunk is a multiple of 4 frames)
    is ever padded, so the shortcut keeps no history. On a tile it is a stride-factor_s
    window along H and W: an odd position left at the tile's edge goes to the next tile.
    """

    def __init__(self, in_dim: int, out_dim: int, factor_t: int, factor_s: int) -> None:
        super().__init__()
        cell = factor_t * factor_s * factor_s
        if in_dim * cell % out_dim:
            raise ValueError(f"an average-down from {in_dim} to {out_dim} channels needs {out_dim} to divide {in_dim} x {cell}")
        self.in_dim, self.out_dim, self.factor_t, self.factor_s = in_dim, out_dim, factor_t, factor_s
        self.group = in_dim * cell // out_dim

    def forward(self, x: Tensor, ctx: StepContext) -> Tensor:  # [B, C, T, H, W] -> [B, out, T/ft, H/fs, W/fs]
        ft, fs = self.factor_t, self.factor_s
        if ft == fs == 1 and self.group == 1:
            return x  # the last level: the identity
        if fs > 1:
            x = ctx.window_input(x, self.state_key, fs, fs, 0, 0)
            if x.shape[3] % fs or x.shape[4] % fs:  # on a tile: whole cells; the rest was handed on
                x = x[:, :, :, : x.shape[3] // fs * fs, : x.shape[4] // fs * fs]
        if x.shape[2] % ft:
            x = prepend_history(x, None, ft - x.shape[2] % ft)
        b, c, t, h, w = x.shape
        if self.group == fs * fs:
            # Wan 2.2's case: each group is one channel's fs x fs cell at one time offset, so
            # output channel c * ft + tau is that cell's mean: a pooling, then time folded into
            # the (4x smaller) channels, instead of a permuted copy of the whole input.
            pooled = _avg_pool_cells(x, fs)  # [B, C, T, h, w]
            if ft == 1:
                return pooled
            pooled = pooled.view(b, c, t // ft, ft, h // fs, w // fs).transpose(2, 3)
            return pooled.reshape(b, self.out_dim, t // ft, h // fs, w // fs)
        x = x.reshape(b, c, t // ft, ft, h // fs, fs, w // fs, fs).permute(0, 1, 3, 5, 7, 2, 4, 6)
        x = x.reshape(b, self.out_dim, self.group, t // ft, h // fs, w // fs)
        return x.mean(dim=2)


def _avg_pool_cells(x: Tensor, fs: int) -> Tensor:
    """The mean of each fs x fs cell. PyTorch's CPU avg_pool3d has no bf16/fp16 kernel; the
    fp32 mean rounded once is what its CUDA kernel (fp32 accumulation) gives."""
    if x.dtype in REDUCED and x.device.type == "cpu":
        return F.avg_pool3d(x.float(), (1, fs, fs)).to(x.dtype)
    return F.avg_pool3d(x, (1, fs, fs))


class DupUp3d(StatefulLayer):
    """The parameter-free shortcut around a Wan 2.2 decoder up-sampling level.

    Repeat each channel (`repeat_interleave`, not `repeat`) to fill `out_dim` channels of
    (factor_t, factor_s, factor_s) cells and unfold the cells into time, rows and columns;
    from 1024 to 1024 channels that is a nearest 2x2x2 up-sample, from 1024 to 512 each
    output channel's cell draws on two input channels. The stream's first latent frame
    keeps one frame of its cell, as the level's up-sampler does.
    """

    def __init__(self, in_dim: int, out_dim: int, factor_t: int, factor_s: int) -> None:
        super().__init__()
        cell = factor_t * factor_s * factor_s
        if out_dim * cell % in_dim:
            raise ValueError(f"a duplicate-up from {in_dim} to {out_dim} channels needs {in_dim} to divide {out_dim} x {cell}")
        self.in_dim, self.out_dim, self.factor_t, self.factor_s = in_dim, out_dim, factor_t, factor_s
        self.repeats = out_dim * cell // in_dim

    def forward(self, x: Tensor, ctx: StepContext) -> Tensor:  # [B, C, T, H, W] -> [B, out, T*ft, H*fs, W*fs]
        ft, fs = self.factor_t, self.factor_s
        b, _, t, h, w = x.shape
        x = x.repeat_interleave(self.repeats, dim=1).view(b, self.out_dim, ft, fs, fs, t, h, w)
        x = x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, self.out_dim, t * ft, h * fs, w * fs)
        return x[:, :, ft - 1 :] if ctx.at_start else x

    def add_to(self, y: Tensor, x: Tensor, ctx: StepContext) -> Tensor:
        """`y + self(x)` in place, never making the shortcut: up to 8x its input, and its
        repeat, permute and add were 2% of a Wan 2.2 decode. Each cell of the output's
        (time, row, column) cells reads one input channel group: output channel o, cell k
        takes input channel o * (in/out) + k // repeats; the very same additions."""
        ft, fs, r = self.factor_t, self.factor_s, self.repeats
        b, _, t, h, w = x.shape
        groups = self.in_dim // self.out_dim if self.in_dim >= self.out_dim else 0
        if not groups or self.in_dim % self.out_dim:
            return y.add_(self(x, ctx))  # channels fan out unevenly: no grouped view; not in Wan 2.2
        parts = [(y, x, range(ft))]
        if ctx.at_start and ft > 1:  # the first frame keeps only its cell's last time step
            parts = [(y[:, :, :1], x[:, :, :1], range(ft - 1, ft)), (y[:, :, 1:], x[:, :, 1:], range(ft))]
        for out, src, taus in parts:
            n = src.shape[2]
            if not n:
                continue
            cells = out.view(b, self.out_dim, n, len(taus), h, fs, w, fs)
            src = src.view(b, self.out_dim, groups, n, h, w)
            for slot, tau in enumerate(taus):
                for i in range(fs):
                    for j in range(fs):
                        cells[:, :, :, slot, :, i, :, j].add_(src[:, :, (tau * fs * fs + i * fs + j) // r])
        return y


class DownLevel(nn.Module):
    """One Wan 2.2 encoder level: its layers (`downsamples.M`, as in the checkpoint) plus the
    average-down of the level's input. On a tile the layers' output trails the shortcut's
    (each conv lags a position), so the shortcut is held back to line up with it."""

    def __init__(self, layers: list[nn.Module], shortcut: AvgDown3d) -> None:
        super().__init__()
        self.downsamples = nn.ModuleList(layers)
        self.avg_shortcut = shortcut

    def forward(self, x: Tensor, ctx: StepContext) -> Tensor:  # [B, C, T, H, W]
        short = self.avg_shortcut(x, ctx)
        for layer in self.downsamples:
            x = layer(x, ctx)
        return x.add_(ctx.align(short, self.avg_shortcut.state_key + ".align", x))


class UpLevel(nn.Module):
    """One Wan 2.2 decoder level: its layers (`upsamples.M`) plus, on the up-sampling levels,
    the duplicate-up of the level's input, held back on a tile as in `DownLevel`."""

    def __init__(self, layers: list[nn.Module], shortcut: DupUp3d | None) -> None:
        super().__init__()
        self.upsamples = nn.ModuleList(layers)
        self.avg_shortcut = shortcut

    def forward(self, x: Tensor, ctx: StepContext) -> Tensor:  # [B, C, T, H, W]
        y = x
        for layer in self.upsamples:
            y = layer(y, ctx)
        if self.avg_shortcut is None:
            return y
        return ctx.add_branch(y, self.avg_shortcut, x)
