"""What a GPU will see, counted without one: conv FLOPs, the bytes every other op reads and
writes, the ops (kernel launches on a GPU) and the peak bytes of live tensors, for an 81-frame
720p clip, wanvae against diffusers, encode and decode, Wan 2.1 and 2.2.

Counted on the meta device (shapes only, no arithmetic) under a dispatch mode that sees every
aten op, on the generic path (the one CUDA takes: `wanvae.model.routes.generic_path`):

- conv_flops: 2 x output elements x input channels per group x kernel size, per convolution;
- other_bytes: for every other op that launches a kernel, the bytes of its tensor inputs and
  outputs (what it reads and writes); views, reshapes and allocations launch nothing and
  count nothing;
- ops: convolutions and other kernel-launching ops;
- peak_bytes: the most bytes of live storage at any op, weights and input included: what
  `torch.cuda.max_memory_allocated` would show, cuDNN's workspace and the allocator's
  rounding aside.

    python bench/costs.py                        # the table, about a few minutes on 2 cores
    python bench/costs.py --json costs.jsonl     # and one JSON row per line
    python bench/costs.py --validate             # meta against a real CPU run at a small size

`predict()` turns counts into a GPU time with the model described in docs/gpu.md; its
parameters are fitted to published figures, and its output is labelled a prediction.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import math
import time
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

aten = torch.ops.aten

# Ops that allocate without writing (no kernel on a GPU) or only rename metadata.
NO_KERNEL = {
    aten.empty, aten.empty_strided, aten.empty_like, aten.new_empty, aten.new_empty_strided, aten.lift_fresh,
    aten.detach, aten.alias, aten.set_, aten._unsafe_view, aten.view, aten.reshape, aten.unsqueeze, aten.squeeze,
    aten.permute, aten.transpose, aten.t, aten.expand, aten.slice, aten.select, aten.split, aten.split_with_sizes,
    aten.chunk, aten.unbind, aten.as_strided, aten.unfold, aten.narrow, aten.view_as_real, aten.view_as_complex,
}
CONVS = {aten.convolution, aten._convolution, aten.cudnn_convolution, aten.mkldnn_convolution, aten.convolution_overrideable}


def _tensors(tree) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def _key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


@dataclasses.dataclass
class Counts:
    conv_flops: int = 0
    other_bytes: int = 0
    ops: int = 0
    peak_bytes: int = 0
    by_op: dict = dataclasses.field(default_factory=lambda: collections.defaultdict(lambda: [0, 0]))  # name -> [ops, bytes]

    def row(self) -> dict:
        return {"conv_flops": self.conv_flops, "other_bytes": self.other_bytes, "ops": self.ops, "peak_bytes": self.peak_bytes}


class CostCounter(TorchDispatchMode):
    """Counts what each aten op would cost a GPU; `baseline` bytes (weights, input) are live
    from the start."""

    def __init__(self, baseline: int = 0) -> None:
        super().__init__()
        self.counts = Counts()
        self.live = baseline
        self.counts.peak_bytes = baseline
        self._refs: dict[int, list] = {}  # storage -> [tensors alive holding it, its bytes]

    def _track(self, t: torch.Tensor) -> None:
        key = _key(t)
        entry = self._refs.get(key)
        if entry is None:
            entry = self._refs[key] = [0, t.untyped_storage().nbytes()]
            self.live += entry[1]
            self.counts.peak_bytes = max(self.counts.peak_bytes, self.live)
        entry[0] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key: int) -> None:
        entry = self._refs.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            self.live -= entry[1]
            del self._refs[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func.overloadpacket
        outputs = _tensors(out)
        for t in outputs:
            if _key(t) in self._refs or not any(_key(t) == _key(i) for i in _tensors((args, kwargs))):
                self._track(t)
        if packet in NO_KERNEL:
            return out
        c = self.counts
        c.ops += 1
        name = packet.__name__
        if packet in CONVS:
            weight = args[1]
            c.conv_flops += 2 * outputs[0].numel() * weight.shape[1] * math.prod(weight.shape[2:])
            c.by_op[name][0] += 1
            return out
        if packet is aten.copy_:
            moved = _nbytes(args[0]) + _nbytes(args[1])
        else:
            inputs = _tensors((args, {k: v for k, v in kwargs.items() if k != "out"}))
            moved = sum(_nbytes(t) for t in inputs) + sum(_nbytes(t) for t in outputs)
        c.other_bytes += moved
        c.by_op[name][0] += 1
        c.by_op[name][1] += moved
        return out


# ---- the jobs ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Job:
    job: str  # "encode" or "decode"
    family: str  # "wan2.1" or "wan2.2"
    impl: str  # "wanvae" or "diffusers"
    tile: int | None
    frames: int
    width: int
    height: int
    dtype: str = "bfloat16"


def count(job: Job, device: str = "meta", seed: int = 0, breakdown: bool = False, config=None) -> dict:
    """The counts of one job, run on `device` ('meta': shapes only; 'cpu': the real thing);
    `config` replaces the family's released config (tests count CPU-sized models)."""
    import wanvae
    from wanvae.coding.plan import run_clip
    from wanvae.model.routes import generic_path
    from wanvae.testing import reference_for

    dtype = getattr(torch, job.dtype)
    cfg = config or wanvae.preset(job.family)
    with torch.device(device):
        vae = wanvae.WanVAE(cfg).to(dtype).eval()
    if device != "meta":
        from wanvae.testing import randomize

        randomize(vae, seed)
    s = cfg.spatial_ratio
    if job.job == "encode":
        x = torch.rand(1, 3, job.frames, job.height, job.width, device=device, dtype=dtype) * 2 - 1
    else:
        x = torch.randn(1, cfg.z_dim, cfg.latent_frames(job.frames), job.height // s, job.width // s, device=device, dtype=dtype)
    weights = sum(_nbytes(p) for p in vae.parameters())
    baseline = weights + _nbytes(x)
    started = time.perf_counter()
    with torch.no_grad(), generic_path():
        if job.impl == "wanvae":
            part = "encoder" if job.job == "encode" else "decoder"
            z = x if job.job == "encode" else vae.denormalize(x)
            plan = vae.plan(part, tuple(z.shape), job.tile)  # planning is host work: not counted
            stages = vae.stages(part)
            with CostCounter(baseline) as counter:
                out = run_clip(stages, plan, z)
                if job.job == "decode":
                    out.clamp_(-1.0, 1.0)
                else:
                    mean, logvar = vae.split_moments(out)
            tiles = 1 if plan.grid is None else len(plan.grid)
        else:
            with torch.device(device):
                ref = reference_for(vae, device=device) if device != "meta" else _meta_reference(vae)
            ref = ref.to(dtype)
            if job.tile:
                ref.enable_tiling(tile_sample_min_height=job.tile, tile_sample_min_width=job.tile,
                                  tile_sample_stride_height=job.tile * 3 // 4, tile_sample_stride_width=job.tile * 3 // 4)
            z = x if job.job == "encode" else vae.denormalize(x)
            with CostCounter(baseline) as counter:
                if job.job == "encode":
                    out = ref.encode(z).latent_dist.mean
                else:
                    out = ref.decode(z).sample
            tiles = None
    row = {**dataclasses.asdict(job), **counter.counts.row(), "tiles": tiles, "weight_bytes": weights,
           "count_seconds": round(time.perf_counter() - started, 1)}
    if breakdown:
        row["by_op"] = {k: v for k, v in sorted(counter.counts.by_op.items(), key=lambda kv: -kv[1][1])}
    return row


def _meta_reference(vae):
    """diffusers' class on the meta device, in the model's layout (weights are shapes only)."""
    import diffusers

    from wanvae.io.weights import diffusers_config

    config = diffusers_config(vae.config)
    with torch.device("meta"):
        return getattr(diffusers, config["_class_name"])(**{k: v for k, v in config.items() if not k.startswith("_")}).eval()


# ---- the GPU model -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class GPU:
    name: str
    bf16_flops: float  # dense peak, FLOP/s
    hbm: float  # bytes/s


GPUS = {"H100": GPU("H100 SXM", 989e12, 3.35e12), "H200": GPU("H200", 989e12, 4.8e12)}


@dataclasses.dataclass(frozen=True)
class CostModel:
    """time = conv_flops / (conv_share x peak) + other_bytes / (memory_share x HBM) + ops x launch.

    Fitted (docs/gpu.md) to sglang's H200 profile of a Wan 2.1 decode (704x1280, 61 frames,
    bf16): convs 1.26 s of 2.59 s GPU time."""

    conv_share: float
    memory_share: float
    launch_s: float

    def predict(self, row: dict, gpu: GPU) -> float:
        return row["conv_flops"] / (self.conv_share * gpu.bf16_flops) + row["other_bytes"] / (self.memory_share * gpu.hbm) + row["ops"] * self.launch_s


# A kernel launch that the GPU does not hide: a few microseconds (eager PyTorch, small ops).
LAUNCH_S = 5e-6
# sglang PR #34125's H200 profile of LongLive2's decode (diffusers-style Wan 2.1 code, bf16).
SGLANG = {"conv_s": 1.26, "gpu_s": 2.59, "job": Job("decode", "wan2.1", "diffusers", None, 61, 1280, 704)}


def fit(calibration: dict) -> CostModel:
    """The model's shares from the counts of sglang's profiled decode."""
    gpu = GPUS["H200"]
    conv_share = calibration["conv_flops"] / (SGLANG["conv_s"] * gpu.bf16_flops)
    other_s = SGLANG["gpu_s"] - SGLANG["conv_s"] - calibration["ops"] * LAUNCH_S
    memory_share = calibration["other_bytes"] / (other_s * gpu.hbm)
    return CostModel(conv_share, memory_share, LAUNCH_S)


def model_for(name: str) -> GPU | None:
    """The GPU of `torch.cuda.get_device_name()`, where the model knows it."""
    for key, gpu in GPUS.items():
        if key in name.upper():
            return gpu
    return None


def load_table(path) -> tuple[list[dict], CostModel | None]:
    """Rows of `--json` output and the model fitted beside them (`--json F` writes F's model
    to F with the suffix `.model.json`)."""
    from pathlib import Path

    path = Path(path)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    model_file = path.with_suffix(".model.json")
    model = CostModel(**json.loads(model_file.read_text())) if model_file.exists() else None
    return rows, model


def find(rows: list[dict], **keys) -> dict | None:
    for row in rows:
        if all(row.get(k) == v for k, v in keys.items()):
            return row
    return None


# ---- the table -----------------------------------------------------------------------------------
def jobs(frames: int = 81) -> list[Job]:
    rows = []
    for family, (w, h) in (("wan2.1", (1280, 720)), ("wan2.2", (1280, 704))):
        for job in ("decode", "encode"):
            for impl, tile in (("wanvae", None), ("wanvae", 256), ("wanvae", 384), ("diffusers", None), ("diffusers", 256)):
                rows.append(Job(job, family, impl, tile, frames, w, h))
    return rows


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", help="write one JSON row per line to this file")
    p.add_argument("--frames", type=int, default=81)
    p.add_argument("--validate", action="store_true", help="compare meta counts with a real CPU run at a small size")
    p.add_argument("--only", help="family,job,impl filter, e.g. wan2.1,decode,wanvae")
    p.add_argument("--breakdown", action="store_true", help="bytes and ops per aten op for each row")
    args = p.parse_args()
    if args.validate:
        validate()
        return
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = fit(count(SGLANG["job"]))
    print(f"# cost model (a prediction, fitted to sglang's H200 profile): conv share {model.conv_share:.3f} of bf16 peak, "
          f"memory share {model.memory_share:.3f} of HBM, {model.launch_s * 1e6:.0f} us a launch")
    header = f"{'family':7} {'job':6} {'impl':9} {'tile':>5} {'TFLOP':>8} {'other GB':>9} {'ops':>8} {'peak GiB':>8} {'H100 s':>7} {'H200 s':>7}"
    print(header)
    out = open(args.json, "w") if args.json else None
    if args.json:
        from pathlib import Path

        Path(args.json).with_suffix(".model.json").write_text(json.dumps(dataclasses.asdict(model)) + "\n")
    for job in jobs(args.frames):
        if args.only and not all(part in (job.family, job.job, job.impl) for part in args.only.split(",")):
            continue
        row = count(job, breakdown=args.breakdown)
        row["predicted_h100_s"] = round(model.predict(row, GPUS["H100"]), 3)
        row["predicted_h200_s"] = round(model.predict(row, GPUS["H200"]), 3)
        print(f"{job.family:7} {job.job:6} {job.impl:9} {str(job.tile or '-'):>5} {row['conv_flops'] / 1e12:8.1f} "
              f"{row['other_bytes'] / 1e9:9.1f} {row['ops']:8d} {_gib(row['peak_bytes']):>8} {row['predicted_h100_s']:7.2f} "
              f"{row['predicted_h200_s']:7.2f}", flush=True)
        if args.breakdown:
            for name, (n, b) in list(row["by_op"].items())[:8]:
                print(f"    {name:28} {n:7d} ops {b / 1e9:9.2f} GB")
        if out:
            row.pop("by_op", None)
            out.write(json.dumps(row) + "\n")
            out.flush()
    if out:
        out.close()


def validate(config=None, sizes=None, frames: int = 5, out=print) -> float:
    """The same counters on the meta device and from a real CPU run (fp32), at a size where
    the tiles split the frame; returns the worst relative gap of bytes, ops and peak, and
    raises if the FLOPs differ."""
    sizes = sizes or {"wan2.1": (256, 128, 128), "wan2.2": (512, 256, 256)}
    worst = 0.0
    for family, (w, h, tile) in sizes.items():
        for job in ("encode", "decode"):
            for impl, t in (("wanvae", None), ("wanvae", tile), ("diffusers", None), ("diffusers", tile)):
                j = Job(job, family, impl, t, frames, w, h, dtype="float32")
                cfg = config(family) if config else None
                meta, real = count(j, "meta", config=cfg), count(j, "cpu", config=cfg)
                if meta["conv_flops"] != real["conv_flops"]:
                    raise AssertionError(f"{j}: conv FLOPs differ, meta {meta['conv_flops']} against {real['conv_flops']}")
                gaps = {k: abs(meta[k] - real[k]) / max(real[k], 1) for k in ("other_bytes", "peak_bytes", "ops")}
                worst = max(worst, *gaps.values())
                out(json.dumps({"job": job, "family": family, "impl": impl, "tile": t, "conv_flops": real["conv_flops"],
                                **{f"{k}_gap": round(v, 4) for k, v in gaps.items()}}))
    out(f"# FLOPs equal in every row; worst relative gap of bytes, ops and peaks: {worst:.4f}")
    return worst


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
