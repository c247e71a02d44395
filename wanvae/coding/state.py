"""The causal temporal state as an explicit value.

Every temporal conv of the VAE looks back a few frames. Instead of a mutable cache list
threaded through the network with an index counter, a step takes a `CausalState` and
returns a new one: a mapping from each stateful layer's module path to the last input
frames it needs, plus how many frames the stream has consumed. A state can be inspected,
copied, compared, saved and restored; a step never mutates the state it was given.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Callable
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
from torch import Tensor

CHANNELS_LAST = torch.channels_last_3d


def _frozen(d: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    return MappingProxyType(dict(d))


@dataclass(frozen=True)
class CausalState:
    """Where a stream stands: frames consumed so far and each layer's look-back frames.

    `history[name]` is [B, C, n, H, W] with n at most the layer's look-back (2 for a
    3x3x3 conv, 1 for a stride-2 temporal down-sampler). A missing entry means the layer
    has seen nothing yet, i.e. its look-back is all zeros, exactly like the reference's
    causal zero padding at the start of a clip.
    """

    frames_seen: int = 0
    history: Mapping[str, Tensor] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not isinstance(self.history, MappingProxyType):
            object.__setattr__(self, "history", _frozen(self.history))

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.history.values())

    def clone(self) -> CausalState:
        return CausalState(self.frames_seen, {k: v.clone() for k, v in self.history.items()})

    def to(self, *args, **kwargs) -> CausalState:
        return CausalState(self.frames_seen, {k: v.to(*args, **kwargs) for k, v in self.history.items()})

    def equal(self, other: CausalState) -> bool:
        """Exact equality of position and every history tensor."""
        return self.frames_seen == other.frames_seen and self.same_history(other)

    def same_history(self, other: CausalState) -> bool:
        """Exact equality of every history tensor (the position aside)."""
        return self.history.keys() == other.history.keys() and all(
            torch.equal(v, other.history[k]) for k, v in self.history.items()
        )

    def to_tensors(self) -> dict[str, Tensor]:
        """A flat dict of tensors, ready for `safetensors.torch.save_file`."""
        out = {f"history.{k}": v.contiguous() for k, v in self.history.items()}
        out["frames_seen"] = torch.tensor([self.frames_seen], dtype=torch.int64)
        return out

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Tensor]) -> CausalState:
        if "frames_seen" not in tensors:
            raise ValueError("not a saved CausalState: no 'frames_seen' tensor")
        history = {k[len("history.") :]: v for k, v in tensors.items() if k.startswith("history.")}
        return cls(int(tensors["frames_seen"].item()), history)


def zeros_along(x: Tensor, dim: int, n: int) -> Tensor:
    """Zeros shaped like x but `n` long along `dim`, in x's memory layout (so a cat keeps it)."""
    shape = list(x.shape)
    shape[dim] = n
    z = x.new_zeros(shape)
    if not x.is_contiguous() and x.is_contiguous(memory_format=CHANNELS_LAST):
        z = z.contiguous(memory_format=CHANNELS_LAST)
    return z


def prepend_history(x: Tensor, history: Tensor | None, lookback: int) -> Tensor:
    """`x` [B, C, T, H, W] preceded by exactly `lookback` frames of history.

    Frames the stream has not produced yet are zeros: the reference's causal padding.
    """
    have = 0 if history is None else history.shape[2]
    parts = []
    if have < lookback:
        parts.append(zeros_along(x, 2, lookback - have))
    if have:
        parts.append(history)
    if not parts:
        return x
    return torch.cat([*parts, x], dim=2)


def constant_tail(s: Tensor) -> int:
    """Index of the first frame of `s`'s constant tail: s[:, :, i:] are all one same frame."""
    i = s.shape[2] - 1
    while i > 0 and torch.equal(s[:, :, i - 1], s[:, :, -1]):
        i -= 1
    return i


def tail_key(key: str) -> str:
    """Where a layer keeps the output frame of its constant tail (see `CausalConv3d`)."""
    return key + ".tail"


def roll_history(x: Tensor, history: Tensor | None, lookback: int) -> Tensor:
    """The last `lookback` real frames of (history, x), as a fresh tensor.

    A fresh copy matters: a view would keep the whole chunk's activation alive for as
    long as the state lives.
    """
    if x.shape[2] >= lookback or history is None:
        return x[:, :, -lookback:].clone()
    return torch.cat([history, x], dim=2)[:, :, -lookback:].clone()


class StepContext:
    """What one step of a coder reads and writes over whole frames: the incoming state, the
    new history, and the answers a layer asks of tiling, which for whole frames are "nothing
    to hand on" (a `seams.TileContext` answers them for one tile).

    Lives for one call. The incoming state is only read; layers put their new look-back
    frames into `updates`, which become the outgoing state. With `record=False` (one-pass
    coding, where no later step follows) nothing is kept. `on_layer`, given by the driver
    that owns the pass, runs as each stateful layer starts (the bounded passes hand the
    heap's free pages back there: see `heap.release`).
    """

    # Whole frames: a layer may write its conv's input in place (a tile's needs its seams first).
    whole_frames = True

    def __init__(
        self, state: CausalState, record: bool = True, *, skip_constant: bool = False, on_layer: Callable[[], None] | None = None
    ) -> None:
        self.frames_seen = state.frames_seen
        # A shallow copy, emptied as layers read it: when the caller hands over its only
        # reference to `state`, each layer's old history is freed as soon as the layer has
        # used it, so the old and the new history of a whole frame (or tile) never coexist
        # (300 MB for one 256-px tile of the full model at 720p). `state` is not changed.
        self._unread = dict(state.history)
        self.record = record
        # Let temporal layers compute one frame when their whole window is one repeated frame.
        self.skip_constant = skip_constant
        self.on_layer = on_layer
        self.updates: dict[str, Tensor] = {}

    @property
    def at_start(self) -> bool:
        """True when this step holds the stream's very first frame."""
        return self.frames_seen == 0

    def history(self, key: str) -> Tensor | None:
        """The layer's look-back frames; each layer reads its own once per step."""
        if self.on_layer is not None:
            self.on_layer()
        return self._unread.pop(key, None)

    def has_history(self, key: str) -> bool:
        """Whether the layer has look-back frames still to read this step."""
        return key in self._unread

    def keep(self, key: str, frames: Tensor) -> None:
        if self.record:
            self.updates[key] = frames

    def result(self, frames_consumed: int) -> CausalState:
        if not self.record:
            return CausalState(self.frames_seen + frames_consumed, {})
        # Layers that saw no frames this step keep their old history.
        merged = {**self._unread, **self.updates}
        return CausalState(self.frames_seen + frames_consumed, merged)

    # ---- what a spatial layer asks of tiling: for whole frames, nothing is handed on ---------
    def conv_input(
        self, x: Tensor, key: str, pad: int, history: Tensor | None = None, lookback: int = 0
    ) -> tuple[Tensor, tuple[int, int, int]]:
        """A k x k conv's input (k = 2 * pad + 1), preceded by `lookback` frames of `history`
        (zeros where the stream has none yet), and the (T, H, W) padding the conv itself
        adds: whole frames are padded by the conv (oneDNN pads faster than a padded copy)."""
        return prepend_history(x, history, lookback), (0, pad, pad)

    def window_input(self, x: Tensor, key: str, kernel: int, stride: int, pad_lo: int, pad_hi: int) -> Tensor:
        """The input of a window op that pads nothing itself (a stride-2 conv, a pooling),
        zero-padded by `pad_lo` before and `pad_hi` after along H and W."""
        return pad_hw(x, pad_lo, pad_hi)

    def delay(self, x: Tensor, key: str, lag: int) -> Tensor:
        """A skip path lined up with a branch that trails it by `lag` positions: as it is."""
        return x

    def align(self, x: Tensor, key: str, like: Tensor) -> Tensor:
        """A branch that runs ahead of `like`, held back to `like`'s positions: as it is."""
        return x

    def add_branch(self, y: Tensor, branch, x: Tensor) -> Tensor:
        """`y + branch(x)` in place, the branch lined up with `y`: here through the branch's
        own `add_to`, which never makes the branch's output whole."""
        return branch.add_to(y, x, self)


def pad_hw(x: Tensor, lo: int, hi: int) -> Tensor:
    """`x` with `lo` zero rows and columns before and `hi` after, in x's layout, written into
    one buffer whose border alone is zeroed (zeroing all of it first, then copying x over
    it, was 3% of an image's encode)."""
    if not lo and not hi:
        return x
    b, c, t, h, w = x.shape
    layout = torch.contiguous_format if x.is_contiguous() else CHANNELS_LAST
    out = torch.empty(b, c, t, lo + h + hi, lo + w + hi, dtype=x.dtype, device=x.device, memory_format=layout)
    for rows, cols in ((slice(0, lo), slice(None)), (slice(lo + h, None), slice(None)),
                       (slice(lo, lo + h), slice(0, lo)), (slice(lo, lo + h), slice(lo + w, None))):
        out[:, :, :, rows, cols].zero_()
    out[:, :, :, lo : lo + h, lo : lo + w] = x
    return out
