"""The real `wanvae` command against hostile input, one subprocess per case.

Each case states the exit status and a needle of its one-line error. For every case: no
traceback, one line on stderr (a batch job: one per failed item), every input byte for
byte as it was, and nothing left in the case's folder but what a success writes. The
cases run in parallel; most fail at argument parsing, before torch is imported.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

import media
import wanvae
from conftest import random_vae
from test_cli import WANVAE


@dataclass
class Case:
    name: str
    args: list[str]
    code: int
    needle: str = ""
    writes: tuple[str, ...] = ()  # what a success leaves in the case's folder
    seed: dict[str, str] = field(default_factory=dict)  # files put in the case's folder first: name -> source key
    lines: int = 1  # lines on stderr


def _sha(path: Path) -> str:
    if path.is_dir():
        return hashlib.sha256("".join(_sha(p) for p in sorted(path.rglob("*")) if p.is_file()).encode()).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Inputs shared by every case: read-only for the commands (hashed before and after)."""
    from PIL import Image
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("hostile-inputs")
    vae = random_vae(seed=3)
    w = {"dir": d, "ckpt": wanvae.save(vae, d / "tiny.safetensors")}
    w["mp4"] = media.write_video(d / "clip.mp4", 9, 64, 48)
    w["png"] = media.write_image(d / "still.png", 48, 32)
    rgba = media.pattern(0, 48, 32)
    rgba = __import__("numpy").dstack([rgba, (rgba[..., :1] > 128).astype("uint8") * 255])
    Image.fromarray(rgba, "RGBA").save(d / "alpha.png")
    w["alpha"] = d / "alpha.png"
    (d / "notes.mp4").write_text("not a video\n")
    w["text"] = d / "notes.mp4"
    whole = media.write_video(d / "whole.mkv", 33, 64, 48).read_bytes()
    (d / "cut.mkv").write_bytes(whole[: len(whole) // 2])
    w["cut_video"] = d / "cut.mkv"
    w["audio"] = media.write_audio_only(d / "a.wav")
    w["ten"] = media.write_video(d / "ten.mp4", 10, 64, 48)

    save_file({"unet.conv_in.weight": torch.zeros(4)}, str(d / "unet.safetensors"))
    w["unet"] = d / "unet.safetensors"
    latents = torch.randn(1, 16, 3, 6, 8)
    meta = {"fps": "16", "frames": "9", "size": "64x48"}
    w["lat"] = wanvae.save_latents(d / "lat.safetensors", latents, meta)
    w["lat_nan"] = wanvae.save_latents(d / "nan.safetensors", latents.clone().index_fill_(2, torch.tensor([1]), float("nan")), meta)
    save_file({"latents": torch.zeros(16, 3, 6, 8, dtype=torch.int32)}, str(d / "int.safetensors"))
    w["lat_int"] = d / "int.safetensors"
    save_file({"latents": torch.zeros(16, 6, 8)}, str(d / "flat.safetensors"))
    w["lat_3d"] = d / "flat.safetensors"
    w["lat_8ch"] = wanvae.save_latents(d / "eight.safetensors", torch.randn(1, 8, 3, 6, 8))
    w["lat_badmeta"] = wanvae.save_latents(d / "badmeta.safetensors", latents, {"fps": "inf", "frames": "33", "size": "64x48"})
    broken = random_vae(seed=3)
    with torch.no_grad():
        broken.decoder.head[2].weight[0, 0, 0, 0, 0] = float("nan")  # the half `encode` does not use
    w["ckpt_nan"] = wanvae.save(broken, d / "nan-decoder.safetensors")
    huge = json.loads(vae.config.to_json())
    huge["dim"] = 100_000
    state = {k: v.contiguous() for k, v in vae.state_dict().items()}
    save_file(state, str(d / "huge.safetensors"), metadata={"wanvae_config": json.dumps(huge)})
    w["ckpt_huge"] = d / "huge.safetensors"
    w["ckpt_cut"] = d / "cut.safetensors"
    w["ckpt_cut"].write_bytes(w["ckpt"].read_bytes()[:5000])

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {d / 'pwned'}",))

    import pickle

    with open(d / "evil.pth", "wb") as f:
        pickle.dump({"encoder.conv1.weight": Evil()}, f)
    w["evil"] = d / "evil.pth"
    torch.save({"latents": torch.zeros(16, 1, 2, 2), "metadata": {}}, d / "ok.pt")
    with open(d / "evil.pt", "wb") as f:
        pickle.dump({"latents": Evil()}, f)
    w["lat_evil"] = d / "evil.pt"
    src = d / "src"
    src.mkdir()
    media.write_video(src / "a.mp4", 9, 64, 48)
    w["src"] = src
    manifest = d / "rows.csv"
    manifest.write_text("path,frames,fps,caption\nsrc/a.mp4,5,,first\n,5,,no path\nsrc/a.mp4,6,,bad frames\nsrc/a.mp4,5,,again\nsrc/a.mp4,,inf,bad fps\n")
    w["manifest"] = manifest
    return w


def _cases(w) -> list[Case]:
    ck = ["--weights", str(w["ckpt"])]
    mp4, lat = str(w["mp4"]), str(w["lat"])
    enc = ["encode", mp4, "-o", "x.safetensors", *ck]
    dec = ["decode", lat, "-o", "x.mp4", *ck]
    rt = ["roundtrip", mp4, "-o", "rt", *ck]
    return [
        # numbers are checked at parse time, with the valid range named
        Case("encode --fps inf", [*enc, "--fps", "inf"], 2, "not a finite number"),
        Case("encode --fps 1e9", [*enc, "--fps", "1e9"], 2, "frames per second in (0, 1000]"),
        Case("encode --fps 0", [*enc, "--fps", "0"], 2, "frames per second in (0, 1000]"),
        Case("encode --fps nan", [*enc, "--fps", "nan"], 2, "not a finite number"),
        Case("encode --start -1", [*enc, "--start", "-1"], 2, "seconds in [0"),
        Case("encode --start 1e400", [*enc, "--start", "1e400"], 2, "not a finite number"),
        Case("encode --frames 10", [*enc, "--frames", "10"], 2, "1 + 4k frames"),
        Case("encode --frames -3", [*enc, "--frames=-3"], 2, "1 + 4k frames"),
        Case("encode --frames huge", [*enc, "--frames", "99999999999"], 2, "up to 1000000"),
        Case("encode --frames x", [*enc, "--frames", "x"], 2, "expected a frame count"),
        Case("encode --size 0x64", [*enc, "--size", "0x64"], 2, "each side from 1 to 16384"),
        Case("encode --size 100000x64", [*enc, "--size", "100000x64"], 2, "each side from 1 to 16384"),
        Case("encode --size 60x44", [*enc, "--size", "60x44"], 2, "multiples of 8"),
        Case("encode --max-area 0", [*enc, "--max-area", "0"], 2, "an area in pixels from 1"),
        Case("encode --tile 0", [*enc, "--tile", "0"], 2, "a tile from 1 to 16384"),
        Case("encode --seed -1", [*enc, "--sample", "--seed=-1"], 2, "a seed from 0"),
        Case("encode --resize bogus", [*enc, "--resize", "bogus"], 2, "invalid choice"),
        Case("encode no input", ["encode"], 2, "the following arguments are required"),
        Case("unknown command", ["transmogrify"], 2, "invalid choice"),
        # outputs: never an input, never an existing file without --overwrite
        Case("encode onto its input", ["encode", lat, "-o", lat, *ck, "--overwrite"], 2, "is also an input"),
        Case("encode onto the weights", ["encode", mp4, "-o", str(w["ckpt"]), *ck, "--overwrite"], 2, "is also an input"),
        Case("encode onto an existing file", [*enc], 2, "already exists", seed={"x.safetensors": "lat"}),
        Case("encode under a file", ["encode", mp4, "-o", "f/x.safetensors", *ck], 2, "is not a folder", seed={"f": "lat"}),
        Case("encode to .mp4", ["encode", mp4, "-o", "x.mp4", *ck], 2, ".safetensors or .pt"),
        # a folder that refuses files is refused before the encode, whoever runs it (root passes access checks)
        Case("encode into /proc", ["encode", mp4, "-o", "/proc/x.safetensors", *ck], 2, "cannot write there"),
        Case("decode into /proc", ["decode", lat, "-o", "/proc/x.mp4", *ck], 2, "cannot write there"),
        # inputs
        Case("encode missing file", ["encode", "nope.mp4", "-o", "x.safetensors", *ck], 2, "nope.mp4"),
        Case("encode text as video", ["encode", str(w["text"]), "-o", "x.safetensors", *ck], 2, "notes.mp4"),
        Case("encode a cut video", ["encode", str(w["cut_video"]), "-o", "x.safetensors", *ck], 2, "truncated"),
        Case("encode audio only", ["encode", str(w["audio"]), "-o", "x.safetensors", *ck], 2, "no video stream"),
        Case("encode 10 frames", ["encode", str(w["ten"]), "-o", "x.safetensors", *ck], 2, "use 9 or 13"),
        Case("encode with a UNet", ["encode", mp4, "-o", "x.safetensors", "--weights", str(w["unet"])], 2, "not a Wan VAE checkpoint"),
        Case("encode transparent png", ["encode", str(w["alpha"]), "-o", "x.safetensors", *ck], 2, "--alpha black or --alpha white"),
        Case("encode transparent png on white", ["encode", str(w["alpha"]), "-o", "x.safetensors", *ck, "--alpha", "white"], 0,
             writes=("x.safetensors",), lines=0),
        Case("encode --device cuda", [*enc, "--device", "cuda"], 2, "no CUDA device"),
        Case("encode --device banana", [*enc, "--device", "banana"], 2, "not a device name"),
        Case("encode no weights", ["encode", mp4, "-o", "x.safetensors"], 2, "no checkpoint"),
        # never silently something else: a tile below the smallest, latents where a video belongs
        Case("encode --tile 64", [*enc, "--tile", "64"], 2, "tiles are at least 128 px"),
        Case("encode --tile 96x256", [*enc, "--tile", "96x256"], 2, "--tile 96x256: this model's tiles are at least 128 px"),
        Case("encode a latents file", ["encode", lat, "-o", "x.safetensors", *ck], 2, "is a latents file, not a video or image: decode it"),
        Case("roundtrip a latents file", ["roundtrip", lat, "-o", "rt", *ck], 2, "is a latents file"),
        Case("cache --tile 64", ["cache", str(w["src"]), "-o", "c", *ck, "--tile", "64"], 2, "tiles are at least 128 px"),
        # checkpoints: the whole file is checked, the half that is not used included
        Case("encode with a NaN decoder", ["encode", mp4, "-o", "x.safetensors", "--weights", str(w["ckpt_nan"])], 2, "NaN"),
        Case("encode with a pickle", ["encode", mp4, "-o", "x.safetensors", "--weights", str(w["evil"])], 2, "never unpickles"),
        Case("encode with a cut file", ["encode", mp4, "-o", "x.safetensors", "--weights", str(w["ckpt_cut"])], 2, "not a readable safetensors"),
        Case("encode with a huge config", ["encode", mp4, "-o", "x.safetensors", "--weights", str(w["ckpt_huge"])], 2, "dim must be at most 4096"),
        # decode: latents files are checked before anything is decoded
        Case("decode onto its input", ["decode", lat, "-o", lat, *ck, "--overwrite"], 2, "is also an input"),
        Case("decode NaN latents", ["decode", str(w["lat_nan"]), "-o", "x.mp4", *ck], 2, "NaN or infinity"),
        Case("decode integer latents", ["decode", str(w["lat_int"]), "-o", "x.mp4", *ck], 2, "floating point"),
        Case("decode 3-D latents", ["decode", str(w["lat_3d"]), "-o", "x.mp4", *ck], 2, "[C, t, h, w]"),
        Case("decode 8-channel latents", ["decode", str(w["lat_8ch"]), "-o", "x.mp4", *ck], 2, "16"),
        Case("decode a pickle", ["decode", str(w["lat_evil"]), "-o", "x.mp4", *ck], 2, "never unpickles"),
        Case("decode --fps -5", [*dec, "--fps=-5"], 2, "frames per second"),
        Case("decode bad metadata", ["decode", str(w["lat_badmeta"]), "-o", "x.mp4", *ck], 0, "is not a frame rate",
             writes=("x.mp4",), lines=2),
        # roundtrip writes four files: none may be an input or an existing file
        Case("roundtrip onto its input", ["roundtrip", "rt/reconstruction.mp4", "-o", "rt", *ck], 2, "is also an input",
             seed={"rt/reconstruction.mp4": "mp4", "rt/metrics.json": "lat"}),
        Case("roundtrip over metrics", [*rt], 2, "already exists", seed={"rt/metrics.json": "lat"}),
        Case("roundtrip --fps inf", [*rt, "--fps", "inf"], 2, "not a finite number"),
        # info, convert
        Case("info of a pickle", ["info", str(w["evil"])], 2, "never unpickles"),
        Case("info onto its input", ["info", lat, "-o", lat, "--overwrite"], 2, "is also an input"),
        Case("convert onto its input", ["convert", str(w["ckpt"]), str(w["ckpt"]), "--to", "original", "--overwrite"], 2, "is also an input"),
        Case("convert --to bogus", ["convert", str(w["ckpt"]), "y.safetensors", "--to", "bogus"], 2, "invalid choice"),
        # cache: bad options refused up front; bad manifest rows fail alone (exit 3)
        Case("cache --frames 10", ["cache", str(w["src"]), "-o", "c", *ck, "--frames", "10"], 2, "1 + 4k frames"),
        Case("cache --workers 0", ["cache", str(w["src"]), "-o", "c", *ck, "--workers", "0"], 2, "a worker count from 1"),
        Case("cache bad rows", ["cache", str(w["manifest"]), "-o", "c", *ck, "--tile", "none", "--workers", "1"], 3, "rows.csv:3",
             writes=("c",), lines=3),
        # train and demo
        Case("train --lr inf", ["train", str(w["src"]), "-o", "m.safetensors", "--lr", "inf"], 2, "not a finite number"),
        Case("train over its --init", ["train", str(w["src"]), "-o", "m.safetensors", "--init", "m.safetensors", "--overwrite"], 2,
             "is also an input", seed={"m.safetensors": "ckpt"}),
        Case("train --encoder-only from scratch", ["train", str(w["src"]), "-o", "m.safetensors", "--encoder-only"], 2,
             "--encoder-only fine-tunes an existing model: give --init CKPT"),
        Case("train both parts only", ["train", str(w["src"]), "-o", "m.safetensors", "--encoder-only", "--decoder-only"], 2,
             "not allowed with argument"),
        Case("demo --frames 6", ["demo", "-o", "d", "--frames", "6"], 2, "1 + 4k frames"),
        Case("demo over its own input", ["demo", "d/clip.mp4", "-o", "d"], 2, "inside the output folder",
             seed={"d/clip.mp4": "mp4", "d/.wanvae-demo": "lat"}),
    ]


def _run_case(case: Case, world, root: Path) -> tuple[Case, subprocess.CompletedProcess, Path, dict, dict]:
    folder = root / case.name.replace(" ", "_").replace("/", "_")
    folder.mkdir()
    for name, key in case.seed.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(world[key], folder / name)
    inputs = {p: _sha(p) for p in [*world["dir"].rglob("*"), *folder.rglob("*")] if p.is_file()}
    env = {k: v for k, v in os.environ.items() if k != "WANVAE_WEIGHTS"}
    result = subprocess.run([WANVAE, *case.args], cwd=folder, capture_output=True, text=True, env=env, timeout=120)
    after = {p: _sha(p) for p in inputs if p.exists()}
    return case, result, folder, inputs, after


def test_hostile_inputs(world, tmp_path):
    cases = _cases(world)
    assert len(cases) >= 40
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda c: _run_case(c, world, tmp_path), cases))
    problems = []
    for case, r, folder, before, after in results:
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        said = f"{case.name}: exit {r.returncode}, stderr {r.stderr!r}"
        if r.returncode != case.code:
            problems.append(f"{said}: expected exit {case.code}")
        if "Traceback" in r.stderr:
            problems.append(f"{said}: a traceback")
        if len(lines) != case.lines:
            problems.append(f"{said}: expected {case.lines} line(s) on stderr")
        if case.needle and case.needle not in r.stderr:
            problems.append(f"{said}: expected {case.needle!r} in the message")
        if before != after:
            problems.append(f"{case.name}: an input changed or vanished: {sorted(str(p) for p in before if after.get(p) != before[p])}")
        left = sorted(str(p.relative_to(folder)) for p in folder.iterdir())
        expected = sorted({*case.writes, *(Path(n).parts[0] for n in case.seed)})
        if left != expected:
            problems.append(f"{case.name}: left {left} in its folder, expected {expected}")
    assert not (world["dir"] / "pwned").exists(), "a pickle ran code"
    assert not problems, "\n".join(problems)
    # Rows that repeat a source each get their own clip and index row; bad rows are named.
    cache = next(folder for case, _, folder, _, _ in results if case.name == "cache bad rows") / "c"
    rows = [json.loads(line) for line in (cache / "index.jsonl").read_text().splitlines()]
    assert sorted((r["source"], r["status"]) for r in rows) == [
        ("rows.csv:3", "failed"), ("rows.csv:4", "failed"), ("rows.csv:6", "failed"), ("src/a.mp4", "ok"), ("src/a.mp4", "ok")
    ]
    assert len({r["output"] for r in rows if r["status"] == "ok"}) == 2


def test_arguments_are_checked_before_torch_is_imported():
    probe = (
        "import sys, runpy\n"
        "sys.argv = ['wanvae', 'encode', 'x.mp4', '--fps', 'inf']\n"
        "try:\n    runpy.run_module('wanvae', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 2, e.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported before the arguments were checked'\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, timeout=60)


# ---- signals -------------------------------------------------------------------------------
def _hidden_leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if ".tmp" in p.name or "stage" in p.name)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_mid_encode_leaves_nothing(world, tmp_path, sig, code):
    clip = media.write_video(tmp_path / "long.mp4", 65, 256, 192)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([WANVAE, "encode", str(clip), "-o", str(out / "x.safetensors"), "--weights", str(world["ckpt"]),
                             "--tile", "128"], stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(3.0)  # well into the encode: torch imported, weights loaded
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == code, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert list(out.iterdir()) == [], "a partial output was left"


def test_ctrl_c_during_cache_ends_quickly_and_resumes(world, tmp_path):
    """SIGINT to the whole process group (what a terminal's Ctrl-C does) at random moments,
    each run into a fresh folder (so each is cut somewhere new), then the last one resumed."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        media.write_video(src / f"v{i}.mp4", 17, 96, 64)
    rng = random.Random(0)
    interrupted = 0
    for trial, delay in enumerate(rng.uniform(0.3, 3.0) for _ in range(4)):
        out = tmp_path / f"out{trial}"
        cmd = [WANVAE, "cache", str(src), "-o", str(out), "--weights", str(world["ckpt"]), "--frames", "9", "--workers", "2",
               "--tile", "none", "-q"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGINT)
        sent = time.monotonic()
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"cache hung after SIGINT at {delay:.1f}s")
        assert time.monotonic() - sent < 10, f"took {time.monotonic() - sent:.1f}s to stop"
        assert proc.returncode in (0, 130), err
        assert "Traceback" not in err, err
        if proc.returncode == 130:
            interrupted += 1
            assert err.strip().splitlines() == ["wanvae cache: interrupted"], err
    assert interrupted >= 2, "too few runs were cut short to test anything"
    final = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    assert _hidden_leftovers(out) == []
    rows = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
