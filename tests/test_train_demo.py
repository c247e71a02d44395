"""Training, resuming, the shipped demo model against its card, and `wanvae demo`."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import wanvae
from wanvae.training import demo, train
from wanvae.config import VAEConfig
import media

MICRO = VAEConfig(dim=4, name="micro")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    media.write_image(d / "a.png", 96, 64, 0)
    media.write_image(d / "b.png", 80, 80, 3)
    media.write_video(d / "c.mp4", 9, 48, 48)
    return d


def test_loss_goes_down(data, tmp_path):
    losses = []
    # The folder's clips (and a few procedural ones): a small, learnable set, so 40 steps
    # show a clear drop; dead-leaves pictures are new every step and too varied for that.
    opts = train.TrainOptions(steps=40, batch=2, clip=(32, 32, 5), lr=1e-3, val_every=40, warmup=5, procedural=0.25, dead_leaves=0.0)
    train.train(data, tmp_path / "m.safetensors", config=MICRO, opts=opts, progress=lambda s, info: losses.append(info["loss"]))
    assert len(losses) == 40
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.9 * first, (first, last)
    assert wanvae.load(tmp_path / "m.safetensors").config.dim == 4


def test_resume_continues_exactly(data, tmp_path):
    opts = train.TrainOptions(steps=12, batch=2, clip=(32, 32, 5), val_every=6, warmup=2)
    train.train(data, tmp_path / "full.safetensors", config=MICRO, opts=opts)
    half = train.TrainOptions(**{**opts.__dict__, "stop_after": 6})
    train.train(data, tmp_path / "part.safetensors", config=MICRO, opts=half)
    steps = []
    train.train(data, tmp_path / "part.safetensors", opts=opts, resume=True, progress=lambda s, info: steps.append(s))
    assert steps == list(range(7, 13))  # continued from step 6
    a = wanvae.load(tmp_path / "full.safetensors").state_dict()
    b = wanvae.load(tmp_path / "part.safetensors").state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    with pytest.raises(ValueError, match="nothing to resume"):
        train.train(data, tmp_path / "none.safetensors", opts=opts, resume=True)


def test_moving_average_is_what_checkpoints_hold_and_resumes_exactly(data, tmp_path):
    opts = train.TrainOptions(steps=3, batch=1, clip=(32, 32, 5), val_every=1, warmup=1, lr=1e-2, ema=0.5)
    init = wanvae.save(wanvae.WanVAE(MICRO), tmp_path / "init.safetensors")
    train.train(data, tmp_path / "full.safetensors", init=init, opts=opts)
    part = tmp_path / "part.safetensors"
    average = wanvae.load(init).state_dict()
    for step in (1, 2, 3):  # one sitting a step: each checkpoint is last step's average moved halfway
        sitting = train.TrainOptions(**{**opts.__dict__, "stop_after": step})
        train.train(data, part, init=init if step == 1 else None, opts=sitting, resume=step > 1)
        saved = wanvae.load(part).state_dict()
        trained = torch.load(train.state_path(part), weights_only=True)["trained"]
        assert any(not torch.equal(saved[k], trained[k]) for k in saved)
        for k in saved:
            assert torch.allclose(saved[k], (average[k] + trained[k]) / 2, atol=1e-6), (step, k)
        average = saved
    full = wanvae.load(tmp_path / "full.safetensors").state_dict()
    assert all(torch.allclose(full[k], average[k], atol=1e-6) for k in full)  # sittings change nothing
    with pytest.raises(ValueError, match="resume with the run.s --ema"):
        train.train(data, part, opts=train.TrainOptions(**{**opts.__dict__, "ema": 0.0}), resume=True)


@pytest.mark.parametrize("part, trained", [("decoder_only", {"decoder", "conv2"}), ("encoder_only", {"encoder", "conv1"})])
def test_training_one_part_keeps_the_other(data, tmp_path, part, trained):
    """--decoder-only keeps the latent space; --encoder-only keeps the decoder."""
    base = wanvae.save(wanvae.WanVAE(MICRO), tmp_path / "base.safetensors")
    opts = train.TrainOptions(steps=3, batch=2, clip=(32, 32, 5), val_every=3, **{part: True})
    train.train(data, tmp_path / "ft.safetensors", init=base, opts=opts)
    before, after = wanvae.load(base).state_dict(), wanvae.load(tmp_path / "ft.safetensors").state_dict()
    assert {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])} == trained


def test_training_both_parts_only_is_refused(data, tmp_path):
    with pytest.raises(ValueError, match="would train nothing"):
        train.train(data, tmp_path / "none.safetensors", opts=train.TrainOptions(decoder_only=True, encoder_only=True))


def test_bf16_runs_the_forward_pass_in_bf16_and_keeps_fp32_weights(data, tmp_path, monkeypatch):
    recon_dtypes = []
    real_forward = train.forward_train

    def spy(*args):
        out = real_forward(*args)
        recon_dtypes.append(out[0].dtype)
        return out

    monkeypatch.setattr(train, "forward_train", spy)
    base = wanvae.save(wanvae.WanVAE(MICRO), tmp_path / "base.safetensors")
    first_losses = {}
    for bf16 in (False, True):
        opts = train.TrainOptions(steps=2, batch=2, clip=(32, 32, 5), val_every=2, warmup=1, bf16=bf16)
        keep_first = lambda s, info, bf16=bf16: first_losses.setdefault(bf16, info["loss"])  # noqa: E731
        train.train(data, tmp_path / f"bf16-{bf16}.safetensors", init=base, opts=opts, progress=keep_first)
    assert recon_dtypes == [torch.float32] * 2 + [torch.bfloat16] * 2
    # Same clips, same weights: bf16 only rounds the activations, so the loss barely moves.
    assert first_losses[True] == pytest.approx(first_losses[False], rel=0.02)
    assert first_losses[True] != first_losses[False]
    from safetensors.torch import load_file

    assert {v.dtype for v in load_file(tmp_path / "bf16-True.safetensors").values()} == {torch.float32}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda_follows_the_cpu_run_and_resumes(data, tmp_path):
    base = wanvae.save(wanvae.WanVAE(MICRO), tmp_path / "base.safetensors")
    opts = train.TrainOptions(steps=4, batch=2, clip=(32, 32, 5), val_every=2, warmup=1, lr=1e-4, stop_after=2)
    runs = {}
    for device in ("cpu", "cuda"):
        losses = []
        out = tmp_path / f"{device}.safetensors"
        train.train(data, out, init=base, opts=opts, val=data, device=device, progress=lambda s, info: losses.append(info["loss"]))  # noqa: B023
        train.train(data, out, opts=dataclasses.replace(opts, stop_after=None), val=data, resume=True, device=device,
                    progress=lambda s, info: losses.append(info["loss"]))  # noqa: B023
        runs[device] = losses, wanvae.load(out).state_dict()
    (cpu_losses, cpu_weights), (gpu_losses, gpu_weights) = runs["cpu"], runs["cuda"]
    assert len(gpu_losses) == 4 and gpu_losses == pytest.approx(cpu_losses, rel=0.02)
    # The same clips and noise on both (drawn on the CPU): only arithmetic differs, so both runs
    # moved the weights the same way.
    start = wanvae.load(base).state_dict()
    moved = sum((cpu_weights[k] - start[k]).pow(2).sum() for k in start).sqrt()
    apart = sum((cpu_weights[k] - gpu_weights[k]).pow(2).sum() for k in start).sqrt()
    assert apart < 0.1 * moved, (apart, moved)


CARD = Path(wanvae.__file__).parent / "assets" / "demo-model.md"


@pytest.mark.skipif(not demo.asset(demo.DEMO_WEIGHTS).exists(), reason="no demo model bundled")
def test_shipped_demo_model_reaches_its_card():
    vae = wanvae.demo_model()
    assert vae.config.z_dim == 16 and (vae.config.spatial_ratio, vae.config.temporal_ratio) == (8, 4)
    assert demo.asset(demo.DEMO_WEIGHTS).stat().st_size <= 8 * 2**20
    card = CARD.read_text()
    claimed = float(re.search(r"PSNR \*\*([0-9.]+) dB\*\*", card).group(1))
    measured = train.evaluate(vae, demo.card_clips())["psnr"]
    assert abs(measured - claimed) <= 0.5, (measured, claimed)


@pytest.mark.skipif(not demo.asset(demo.DEMO_WEIGHTS).exists(), reason="no demo model bundled")
def test_shipped_demo_model_holds_over_a_long_clip_as_its_card_says():
    """The card's first long clip (49 frames, 13 latent frames): its first and last 8 frames."""
    card = CARD.read_text()
    first, last = map(float, re.search(r"move 1: ([0-9.]+) -> ([0-9.]+)", card).groups())
    frames = train.frame_psnr(wanvae.demo_model(), [demo.long_clip(demo.CARD_SEEDS[0])])[0]
    assert frames.shape == (49,)
    assert abs(float(frames[:8].mean()) - first) <= 0.05, (frames[:8].mean(), first)
    assert abs(float(frames[-8:].mean()) - last) <= 0.05, (frames[-8:].mean(), last)
    assert first - last <= 2.0  # the bar the model was trained to: the causal state holds


def test_demo_card_and_its_lineage_agree():
    """The card is written from tools/demo-lineage.json: its sittings and rebuild commands."""
    lineage = json.loads((Path(__file__).parents[1] / "tools" / "demo-lineage.json").read_text())
    card = CARD.read_text()
    assert f"- {len(lineage['sittings'])} sitting(s)" in card
    assert ", ".join(f"{s['steps']} steps" for s in lineage["sittings"]) in card
    rebuild = card.split("```bash\n")[1].split("```")[0].splitlines()
    # Between making the data and packaging the model: the sittings (and any averaging of them).
    assert rebuild[1:-1] == lineage["commands"]
    assert rebuild[0].endswith("python tools/demo_data.py /tmp/demo-data") and rebuild[-1].startswith("python tools/demo_card.py")


def test_average_weights_tool_writes_the_mean_of_its_checkpoints(tmp_path):
    a, b = (wanvae.save(wanvae.WanVAE(MICRO), tmp_path / f"{n}.safetensors") for n in "ab")
    tool = Path(__file__).parents[1] / "tools" / "average_weights.py"
    r = subprocess.run([sys.executable, tool, "-o", tmp_path / "mean.safetensors", a, b], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    sa, sb = wanvae.load(a).state_dict(), wanvae.load(b).state_dict()
    mean = wanvae.load(tmp_path / "mean.safetensors").state_dict()
    assert any(not torch.equal(sa[k], sb[k]) for k in sa)
    assert all(torch.allclose(mean[k], (sa[k] + sb[k]) / 2, atol=1e-7) for k in mean)


@pytest.mark.skipif(not demo.asset(demo.DEMO_WEIGHTS).exists(), reason="no demo model bundled")
def test_wanvae_demo_writes_its_outputs(tmp_path):
    out = tmp_path / "demo"
    cmd = [shutil.which("wanvae"), "demo", "-o", out, "--frames", "9", "--size", "128x128"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "PSNR" in r.stdout and "latents: [16, 3, 16, 16]" in r.stdout
    assert {p.name for p in out.iterdir()} >= {"side_by_side.mp4", "frames.png", "metrics.json", ".wanvae-demo"}
    assert json.loads((out / "metrics.json").read_text())["psnr"] > 15
    assert subprocess.run(cmd, capture_output=True).returncode == 0  # its own output is replaced
    (tmp_path / "mine").mkdir()
    r = subprocess.run([shutil.which("wanvae"), "demo", "-o", tmp_path / "mine"], capture_output=True, text=True)
    assert r.returncode == 2 and "not an earlier demo output" in r.stderr


def test_dead_leaves_pictures_are_deterministic_occluding_and_in_range():
    from wanvae.training.clips import dead_leaves_image, image_palette

    a = dead_leaves_image((96, 64), torch.Generator().manual_seed(3))
    b = dead_leaves_image((96, 64), torch.Generator().manual_seed(3))
    c = dead_leaves_image((96, 64), torch.Generator().manual_seed(4))
    assert a.shape == (3, 64, 96) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1 and a.max() <= 1
    # Covered by many leaves of many sizes: lots of distinct colours, and flat regions
    # (neighbouring pixels often equal) alongside sharp edges (some jump a lot).
    assert len(torch.unique(a[0])) > 200
    steps = (a[:, :, 1:] - a[:, :, :-1]).abs().amax(0)
    assert (steps < 0.02).float().mean() > 0.1 and (steps > 0.3).float().mean() > 0.01  # noise: ~0.01 flat
    # With a palette, leaf colours are drawn from it (here: only pure red and pure blue).
    palette = image_palette([torch.tensor([[[1.0, -1.0]], [[-1.0, -1.0]], [[-1.0, 1.0]]])], per_image=64)
    d = dead_leaves_image((64, 64), torch.Generator().manual_seed(5), palette)
    # Shading adds the same offset to every channel, so green never leads (bar the odd
    # uncovered bit of the random background).
    assert (d[1] > torch.maximum(d[0], d[2]) + 0.05).float().mean() < 0.05


def test_clip_sampler_mixes_dead_leaves_with_the_folder(data):
    sampler = train.ClipSampler(data)
    g = torch.Generator().manual_seed(0)
    clips = [sampler.sample(5, (32, 32), g) for _ in range(12)]
    assert all(c.shape == (3, 5, 32, 32) and c.min() >= -1 and c.max() <= 1 for c in clips)
    assert sampler.palette is not None and sampler.palette.shape[1] == 3


def test_camera_clips_keep_the_detail_their_pixels_can_show():
    """Shrinking a 512-px picture into 64 px (3.6x to 8x) must keep stripes 32 px apart (4 to
    9 clip pixels): the antialiasing once shrank such pictures to 16 px first and lost them."""
    from wanvae.training.clips import camera_clip

    stripes = ((torch.arange(512) // 16) % 2 * 2 - 1.0).view(1, 1, 512).expand(3, 512, 512)
    g = torch.Generator().manual_seed(0)
    assert min(float(camera_clip(stripes, 5, (64, 64), g)[:, 0].std()) for _ in range(12)) > 0.4


def test_any_scale_shows_a_big_photo_at_its_own_pixel_scale():
    """A 64-px crop of a 512-px picture of one-pixel stripes: shrunk to fit (at least 3.6x,
    antialiased) the stripes average out to grey; with any_scale some clips come near the
    picture's own scale, where they stay visible."""
    from wanvae.training.clips import camera_clip

    stripes = (torch.arange(512) % 2 * 2 - 1.0).view(1, 1, 512).expand(3, 512, 512)

    def contrast(any_scale: bool) -> list[float]:
        g = torch.Generator().manual_seed(0)
        clips = [camera_clip(stripes, 5, (64, 64), g, any_scale=any_scale) for _ in range(24)]
        return [float(c[:, 0].std()) for c in clips]

    assert max(contrast(False)) < 0.1
    scaled = contrast(True)
    assert max(scaled) > 0.5 and min(scaled) < 0.1  # near its own scale and shrunk: both occur


def test_magnify_lets_the_camera_zoom_in_past_a_photos_own_pixels():
    """A horizontal ramp rises 2/127 per image pixel, so a clip's gradient per clip pixel is
    that over the magnification: at most 1x without `magnify`, up to 4x with magnify=4."""
    from wanvae.training.clips import camera_clip

    ramp = torch.linspace(-1, 1, 128).view(1, 1, 128).expand(3, 128, 128)

    def gradients(magnify: float) -> list[float]:
        g = torch.Generator().manual_seed(0)
        clips = [camera_clip(ramp, 5, (32, 32), g, any_scale=True, magnify=magnify) for _ in range(32)]
        return [float((c[0, 0, 16, 1:] - c[0, 0, 16, :-1]).abs().median()) for c in clips]

    per_pixel = 2 / 127
    assert min(gradients(1.0)) > 0.98 * per_pixel  # never past the photo's own pixels (rolls cost < 2%)
    magnified = gradients(4.0)
    assert min(magnified) < per_pixel / 2 and min(magnified) > 0.97 * per_pixel / 4


def test_recolour_gives_grey_pictures_colour_and_keeps_their_structure():
    from wanvae.training.clips import recolour

    g = torch.Generator().manual_seed(0)
    grey = (torch.linspace(-1, 1, 32).view(1, 1, 1, 32) * torch.linspace(0.2, 1, 32).view(1, 1, 32, 1)).expand(3, 2, 32, 32)
    out = [recolour(grey, g) for _ in range(8)]
    assert all(o.shape == grey.shape and o.min() >= -1 and o.max() <= 1 for o in out)
    saturation = [float((o.amax(0) - o.amin(0)).mean()) for o in out]  # 0 for grey
    assert min(saturation) > 0.02 and max(saturation) > 0.2
    for o in out:  # brightness still follows the picture's
        corr = torch.corrcoef(torch.stack([o.mean(0).flatten(), grey[0].flatten()]))[0, 1]
        assert corr > 0.9
    a = recolour(grey, torch.Generator().manual_seed(1))
    assert torch.equal(a, recolour(grey, torch.Generator().manual_seed(1)))


def test_mse_weight_adds_squared_error_to_the_loss():
    g = torch.Generator().manual_seed(0)
    clip = torch.rand(1, 3, 5, 16, 16, generator=g) * 2 - 1
    recon = clip + 0.3 * torch.randn(clip.shape, generator=g)
    mean, logvar = torch.zeros(1, 16, 2, 2, 2), torch.zeros(1, 16, 2, 2, 2)
    plain = train.loss_terms(recon, clip, mean, logvar, train.TrainOptions())
    squared = train.loss_terms(recon, clip, mean, logvar, train.TrainOptions(mse_weight=2.0))
    assert plain["mse"] == pytest.approx(0.09, rel=0.1)
    assert float(squared["loss"] - plain["loss"]) == pytest.approx(2 * float(plain["mse"]), rel=1e-5)


def test_coarse_colour_weight_adds_only_regional_hue_error_to_the_loss():
    g = torch.Generator().manual_seed(0)
    clip = torch.rand(1, 3, 5, 32, 32, generator=g) * 2 - 1
    mean, logvar = torch.zeros(1, 16, 2, 4, 4), torch.zeros(1, 16, 2, 4, 4)
    opts = train.TrainOptions(coarse_colour_weight=3.0)

    def extra(recon):  # what the term adds to the loss
        return float(train.loss_terms(recon, clip, mean, logvar, opts)["loss"] - train.loss_terms(recon, clip, mean, logvar, train.TrainOptions())["loss"])

    tint = torch.tensor([0.1, -0.1, 0.0]).view(1, 3, 1, 1, 1)  # one wrong hue everywhere: chroma error 0.1^2 * 2/3
    assert extra(clip + tint) == pytest.approx(3.0 * 0.01 * 2 / 3, rel=1e-4)
    assert extra(clip + 0.1) == pytest.approx(0.0, abs=1e-7)  # brightness only
    checker = (torch.arange(32).view(1, 32) + torch.arange(32).view(32, 1)) % 2 * 0.2 - 0.1
    fringe = torch.stack([checker, -checker, torch.zeros_like(checker)]).view(1, 3, 1, 32, 32)
    assert 0 < extra(clip + fringe) < 0.01 * extra(clip + tint)  # pixel-scale colour noise barely counts


def test_shift_chroma_moves_colour_independently_of_brightness_and_keeps_brightness():
    from wanvae.training.clips import shift_chroma

    ramp = torch.linspace(-0.15, 0.15, 24)
    picture = torch.stack([ramp.view(1, 24).expand(24, 24), ramp.view(24, 1).expand(24, 24), torch.zeros(24, 24)])
    clip = picture.unsqueeze(1).expand(3, 3, 24, 24)  # [3, T, H, W], the same picture in every frame
    g = torch.Generator().manual_seed(0)
    outs = [shift_chroma(clip, g) for _ in range(16)]
    for out in outs:
        assert out.shape == clip.shape and out.min() >= -1 and out.max() <= 1
        assert torch.equal(out[:, 0], out[:, 2])  # one colour field for the whole clip
        inside = (out.abs() < 1).all(0)  # brightness is only changed where a channel clipped
        assert inside.float().mean() > 0.5
        assert torch.allclose(out.mean(0)[inside], clip.mean(0)[inside], atol=1e-6)
    # Hue turns: the reddest channel of the top-right corner differs between draws.
    assert len({int(out[:, 0, 0, -1].argmax()) for out in outs}) >= 2
    # Grey gains colour that varies across the picture, not one tint per picture.
    grey = torch.zeros(3, 32, 32)
    fields = [shift_chroma(grey, g) for _ in range(16)]
    assert max(float((f - f.mean((1, 2), keepdim=True)).abs().amax()) for f in fields) > 0.1
    assert torch.equal(shift_chroma(grey, torch.Generator().manual_seed(3)), shift_chroma(grey, torch.Generator().manual_seed(3)))


def test_sampler_chroma_colours_grey_photos_and_leaves_the_default_stream_alone(tmp_path):
    from wanvae.training.clips import ClipSampler

    media.write_image(tmp_path / "grey.png", 64, 64, 0)
    grey_folder = tmp_path / "g"
    grey_folder.mkdir()
    from PIL import Image

    Image.open(tmp_path / "grey.png").convert("L").convert("RGB").save(grey_folder / "grey.png")

    def clips(**kw) -> list[torch.Tensor]:
        s = ClipSampler(grey_folder, procedural=0.0, dead_leaves=0.0, **kw)
        g = torch.Generator().manual_seed(0)
        return [s.sample(3, (32, 32), g) for _ in range(6)]

    plain, coloured = clips(), clips(chroma=1.0)
    assert max(float((c.amax(0) - c.amin(0)).max()) for c in plain) < 0.02
    saturation = [float((c.amax(0) - c.amin(0)).mean()) for c in coloured]  # field strengths are drawn from 0 up
    assert min(saturation) > 0.002 and sum(saturation) / len(saturation) > 0.05
    assert all(torch.equal(a, b) for a, b in zip(plain, clips(chroma=0.0)))


def test_wanvae_train_command_runs_a_sitting_and_rejects_bad_sizes(data, tmp_path):
    config = tmp_path / "micro.json"
    config.write_text(json.dumps({"dim": 4, "name": "micro"}))
    out = tmp_path / "m.safetensors"
    cmd = [shutil.which("wanvae"), "train", data, "-o", out, "--config", config, "--steps", "4", "--stop-after", "2",
           "--batch", "1", "--clip", "32x32x5", "--any-scale", "--recolour", "0.5", "--chroma", "0.5", "--mse", "2", "--coarse-colour", "5", "--images", "0.5", "--val-every", "2", "--quiet", "--alternate-clip", "32x32x9", "--ema", "0.9"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert torch.load(train.state_path(out), weights_only=True)["step"] == 2  # stopped after the first sitting
    assert wanvae.load(out).config.dim == 4
    r = subprocess.run(cmd[:11] + ["--clip", "30x32x5"], capture_output=True, text=True)
    assert r.returncode == 2 and "multiples of 8" in r.stderr
    r = subprocess.run(cmd[:11] + ["--mse", "-1"], capture_output=True, text=True)
    assert r.returncode == 2 and "loss weight must be >= 0" in r.stderr
    r = subprocess.run(cmd[:11] + ["--magnify", "2"], capture_output=True, text=True)
    assert r.returncode == 2 and "--magnify sets how far --any-scale zooms in" in r.stderr
    r = subprocess.run(cmd[:11] + ["--any-scale", "--magnify", "0.5"], capture_output=True, text=True)
    assert r.returncode == 2 and "between 1 and 16" in r.stderr
    r = subprocess.run(cmd[:11] + ["--clip", "32x32x5", "--view", "64x24"], capture_output=True, text=True)
    assert r.returncode == 2 and "--view 64x24 is smaller than the 32x32 clips (--clip)" in r.stderr
    r = subprocess.run(cmd[:11] + ["--alternate-clip", "36x32x5"], capture_output=True, text=True)
    assert r.returncode == 2 and "--alternate-clip 36x32x5: W and H must be multiples of 8" in r.stderr
    r = subprocess.run(cmd[:11] + ["--ema", "1"], capture_output=True, text=True)
    assert r.returncode == 2 and "a decay in [0, 1)" in r.stderr


def test_view_films_photos_at_its_size_and_keeps_a_window_of_them(tmp_path):
    """A photo clip drawn with `view` is exactly a crop of the same camera move filmed at the
    view's size: the draws of the sampler, replayed by hand, give the same pixels."""
    from wanvae.training.clips import ClipSampler, camera_clip, load_image, random_crop

    media.write_image(tmp_path / "a.png", 200, 150, 5)
    photo = load_image(tmp_path / "a.png")
    sampler = ClipSampler(tmp_path, procedural=0.0, dead_leaves=0.0, view=(128, 96))
    for seed in range(4):
        clip = sampler.sample(5, (32, 24), torch.Generator().manual_seed(seed))
        g = torch.Generator().manual_seed(seed)
        torch.rand((), generator=g), torch.randint(0, 1, (), generator=g)  # the pick, the photo
        full = camera_clip(photo, 5, (128, 96), g)  # [3, 5, 96, 128]
        window = random_crop(full, (32, 24), g)
        if torch.rand((), generator=g).item() < 0.5:
            window = window.flip(-1)
        assert clip.shape == (3, 5, 24, 32) and torch.equal(clip, window)
        assert any(torch.equal(window, full[..., y : y + 24, x : x + 32]) or torch.equal(window, full[..., y : y + 24, x : x + 32].flip(-1))
                   for y in range(96 - 24 + 1) for x in range(128 - 32 + 1))


def test_image_steps_train_on_batch_times_t_single_frames(data):
    sampler = train.ClipSampler(data)
    clips = train.TrainOptions(batch=2, clip=(32, 32, 5))
    images = train.TrainOptions(batch=2, clip=(32, 32, 5), images=1.0)
    g = torch.Generator().manual_seed(0)
    assert train.training_batch(sampler, clips, g).shape == (2, 3, 5, 32, 32)
    assert train.training_batch(sampler, images, g).shape == (10, 3, 1, 32, 32)
    half = train.TrainOptions(batch=2, clip=(32, 32, 5), images=0.5)
    shapes = {train.training_batch(sampler, half, g).shape[2] for _ in range(12)}
    assert shapes == {1, 5}


def test_alternate_clip_trains_every_other_step_on_its_own_size(data):
    sampler = train.ClipSampler(data)
    opts = train.TrainOptions(batch=2, clip=(32, 32, 9), alternate_clip=(48, 40, 5))
    g = torch.Generator().manual_seed(0)
    shapes = [tuple(train.training_batch(sampler, opts, g, step).shape) for step in range(4)]
    assert shapes == [(2, 3, 9, 32, 32), (2, 3, 5, 40, 48)] * 2


def test_colour_share_tells_colour_from_brightness_and_coarse_from_fine():
    from wanvae.metrics import colour_share

    clip = torch.rand(3, 2, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    grey = clip + 0.1  # the same error in every channel: brightness only
    assert colour_share(grey, clip) == pytest.approx((0.0, 0.0), abs=1e-6)
    tint = clip + torch.tensor([0.1, -0.1, 0.0]).view(3, 1, 1, 1)  # a hue shift over the whole picture
    assert colour_share(tint, clip) == pytest.approx((1.0, 1.0), abs=1e-5)
    checker = (torch.arange(32).view(1, 32) + torch.arange(32).view(32, 1)) % 2 * 0.2 - 0.1  # pixel-scale colour noise
    fringe = clip + torch.stack([checker, -checker, torch.zeros_like(checker)]).unsqueeze(1)
    share, coarse = colour_share(fringe, clip)
    assert share == pytest.approx(1.0, abs=1e-5) and coarse < 0.01


def test_lineage_commands_chain_to_the_shipped_weights():
    """Rebuilding runs the card's commands in order: each --init is what an earlier command
    wrote, and only the last sitting writes the shipped name."""
    commands = json.loads((Path(__file__).parents[1] / "tools" / "demo-lineage.json").read_text())["commands"]
    written: list[str] = []
    for command in commands:
        args = command.split()
        if "--init" in args:
            assert args[args.index("--init") + 1] in written, command
        if "--resume" in args:
            assert args[args.index("-o") + 1] in written, command
        written.append(args[args.index("-o") + 1])
    assert written[-1] == "demo.safetensors" and written.count("demo.safetensors") == 1 + sum(
        "--resume" in c and " -o demo.safetensors " in c for c in commands
    )
