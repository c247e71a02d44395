"""wanvae as a drop-in VAE under diffusers' real Wan pipelines, and back to diffusers' class.

Every pipeline here is diffusers' own, with tiny random components built in the test (no
hub): the same pipeline runs once with diffusers' AutoencoderKLWan and once with ours, the
same weights mapped across, and the frames must agree.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import wanvae
from wanvae.testing import randomize, reference_for, tiny_wan_pipeline

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from diffusers import AutoencoderKLWan, ModelMixin, WanPipeline  # noqa: E402
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution  # noqa: E402

from wanvae.integrations.diffusers import conditioning_frames  # noqa: E402

PIPELINE_TOL = 1e-4


@pytest.fixture(scope="module")
def vae21():
    return randomize(wanvae.WanVAE(wanvae.preset("tiny")), seed=5)


@pytest.fixture(scope="module")
def vae22():
    return randomize(wanvae.WanVAE(wanvae.preset("tiny-2.2")), seed=6)


@pytest.fixture(scope="module", params=["wan2.1", "wan2.2"])
def family(request, vae21, vae22):
    """(our WanVAE, diffusers' AutoencoderKLWan with the same weights) for each family."""
    vae = vae21 if request.param == "wan2.1" else vae22
    return vae, reference_for(vae)


def _clip(frames: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, frames, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _image(h: int, w: int, seed: int):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((h, w, 3)) * 255).astype("uint8"))


def _prompt():
    return torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(3))


def _frames(pipe, **kwargs) -> np.ndarray:
    kwargs.setdefault("num_inference_steps", 2)
    return pipe(prompt_embeds=_prompt(), guidance_scale=1.0, generator=torch.Generator().manual_seed(0), output_type="np", **kwargs).frames


# ---- the model object ------------------------------------------------------------------------
def test_the_adapter_is_a_diffusers_model_with_diffusers_config(family):
    vae, ref = family
    ours = wanvae.for_diffusers(vae)
    assert isinstance(ours, ModelMixin) and ours.wan is vae
    for key, value in ref.config.items():
        if not key.startswith("_"):
            assert ours.config[key] == (list(value) if isinstance(value, tuple) else value), key
    assert ours.config.scale_factor_spatial == vae.config.spatial_ratio
    assert ours.config.scale_factor_temporal == 4
    assert ours.temperal_downsample == list(ref.temperal_downsample)  # WanVideoToVideoPipeline reads it
    assert ours.dtype == torch.float32 and ours.device == torch.device("cpu")
    import copy

    moved = wanvae.for_diffusers(copy.deepcopy(vae)).to("cpu", torch.float64)  # what DiffusionPipeline.to does
    assert moved.dtype == torch.float64 and moved.wan.part_dtype("encoder") == torch.float64


def test_importing_wanvae_does_not_import_diffusers():
    code = "import sys, wanvae; wanvae.WanVAE; assert 'diffusers' not in sys.modules, 'diffusers imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_latent_dist_is_diffusers_posterior_over_raw_moments(family):
    vae, ref = family
    ours = wanvae.for_diffusers(vae)
    x = torch.cat([_clip(5, 32, 32, seed=1), _clip(5, 32, 32, seed=2)])
    got, want = ours.encode(x).latent_dist, ref.encode(x).latent_dist
    assert isinstance(got, DiagonalGaussianDistribution)
    assert (got.mean - want.mean).abs().max() < 1e-5
    assert (got.logvar - want.logvar).abs().max() < 1e-5
    assert (got.mode() - want.mode()).abs().max() < 1e-5
    # The same generator gives diffusers' draw, not one of our own.
    drawn = got.sample(torch.Generator().manual_seed(7)) - want.sample(torch.Generator().manual_seed(7))
    assert drawn.abs().max() < 1e-5
    # Raw, not normalised: the pipelines normalise themselves.
    assert (got.mean - vae.encode_moments(x)[0]).abs().max() == 0
    ours.enable_slicing()  # one item at a time: the same numbers, to a batch-1 kernel's rounding
    assert (ours.encode(x).latent_dist.mean - got.mean).abs().max() < 1e-5
    ours.disable_slicing()


def test_decode_takes_raw_latents_like_diffusers(family):
    vae, ref = family
    ours = wanvae.for_diffusers(vae)
    z = torch.randn(2, vae.config.z_dim, 3, 2, 2, generator=torch.Generator().manual_seed(4))
    got = ours.decode(z, return_dict=False)[0]
    assert (got - ref.decode(z).sample).abs().max() < 1e-5
    ours.enable_slicing()
    assert (ours.decode(z).sample - got).abs().max() < 1e-5
    assert (ours(_clip(5, 32, 32)).sample - ref(_clip(5, 32, 32)).sample).abs().max() < 1e-5


def test_each_part_gets_its_own_dtype_and_the_decoder_is_reported(vae21):
    import copy

    vae = copy.deepcopy(vae21).cast("decoder", torch.float64)
    ours = wanvae.for_diffusers(vae)
    assert vae.part_dtype("encoder") == torch.float32 and ours.dtype == torch.float64
    x = _clip(5, 32, 32)
    z = ours.encode(x.double()).latent_dist.mode()  # the pipeline casts to vae.dtype: we cast back
    assert z.dtype == torch.float32
    video = ours.decode(z).sample
    assert video.dtype == torch.float64
    ref = reference_for(vae21)
    assert (video - ref.decode(ref.encode(x).latent_dist.mode()).sample.double()).abs().max() < 1e-5


# ---- the image-to-video fast path --------------------------------------------------------------
def test_conditioning_clips_are_recognised_exactly_and_nothing_else():
    first, last = _clip(1, 16, 16, seed=1), _clip(1, 16, 16, seed=2)
    zeros = torch.zeros(1, 3, 7, 16, 16)
    found = conditioning_frames(torch.cat([first, zeros, torch.zeros_like(last)], 2), 4)
    assert found is not None and torch.equal(found[0], first) and found[1] is None
    found = conditioning_frames(torch.cat([first, zeros, last], 2), 4)
    assert found is not None and torch.equal(found[1], last)
    almost = torch.cat([first, zeros, last], 2)
    almost[0, 1, 4, 3, 3] = 1e-30  # one value off zero is a different clip
    assert conditioning_frames(almost, 4) is None
    with_nan = torch.cat([first, zeros, last], 2)
    with_nan[0, 0, 2, 0, 0] = float("nan")
    assert conditioning_frames(with_nan, 4) is None
    assert conditioning_frames(first, 4) is None  # one frame: a plain encode is already that cheap
    assert conditioning_frames(_clip(9, 16, 16), 4) is None


def test_the_fast_path_equals_a_plain_encode_and_skips_the_zero_frames(family):
    vae, _ = family
    ours = wanvae.for_diffusers(vae)
    first, last = _clip(1, 32, 32, seed=1), _clip(1, 32, 32, seed=2)
    skipping = []  # per encoder call: did it run with the constant-input shortcut?
    hook = vae.encoder.conv1.register_forward_hook(lambda m, inputs, out: skipping.append(inputs[1].skip_constant))
    try:
        for clip in (torch.cat([first, torch.zeros(1, 3, 16, 32, 32)], 2), torch.cat([first, torch.zeros(1, 3, 15, 32, 32), last], 2)):
            skipping.clear()
            got = ours.encode(clip).latent_dist
            assert any(skipping), "the adapter did not take the conditioning fast path"
            skipping.clear()
            mean, logvar = vae.encode_moments(clip)
            assert not any(skipping)
            assert (got.mean - mean).abs().max() < 1e-5 and (got.logvar - logvar).abs().max() < 1e-5
        skipping.clear()
        ours.encode(_clip(17, 32, 32))
        assert not any(skipping)
    finally:
        hook.remove()


# ---- real pipelines ---------------------------------------------------------------------------
def _pipeline_cases():
    return [
        ("wan2.1", "t2v", {}, {"num_frames": 9, "height": 32, "width": 64}),
        ("wan2.1", "i2v", {}, {"num_frames": 9, "height": 32, "width": 64, "image": _image(32, 64, 1)}),
        ("wan2.1", "flf2v", {}, {"num_frames": 9, "height": 32, "width": 64, "image": _image(32, 64, 1), "last_image": _image(32, 64, 2)}),
        ("wan2.1", "v2v", {}, {"height": 32, "width": 64, "video": [_image(32, 64, i) for i in range(9)], "strength": 0.7}),
        ("wan2.2", "t2v", {"expand_timesteps": True}, {"num_frames": 9, "height": 64, "width": 64}),
        ("wan2.2", "i2v", {"expand_timesteps": True}, {"num_frames": 9, "height": 64, "width": 64, "image": _image(64, 64, 1)}),
    ]


@pytest.mark.parametrize(
    "which, kind, build, call", _pipeline_cases(),
    ids=["2.1-t2v", "2.1-i2v", "2.1-flf2v", "2.1-v2v", "2.2-t2v", "2.2-ti2v"],
)
def test_a_real_pipeline_gives_diffusers_frames_with_our_vae(which, kind, build, call, vae21, vae22):
    vae = vae21 if which == "wan2.1" else vae22
    pipe = tiny_wan_pipeline(kind, reference_for(vae), **build)
    want = _frames(pipe, **call)
    pipe.vae = wanvae.for_diffusers(vae)
    got = _frames(pipe, **call)
    assert got.shape == want.shape and want.std() > 0.05
    assert np.abs(got - want).max() < PIPELINE_TOL


def test_tiling_in_a_pipeline_is_exact_where_diffusers_blends(vae21):
    """Wide enough for two tiles of 128 px (16 latents each): ours equals our untiled run;
    diffusers' blended tiles differ from its own untiled one."""
    ref, ours = reference_for(vae21), wanvae.for_diffusers(vae21)
    call = {"num_frames": 5, "height": 32, "width": 256, "num_inference_steps": 1}
    pipe = tiny_wan_pipeline("t2v", ref)
    ref_untiled = _frames(pipe, **call)
    ref.enable_tiling(tile_sample_min_height=128, tile_sample_min_width=128, tile_sample_stride_height=96, tile_sample_stride_width=96)
    ref_tiled = _frames(pipe, **call)
    pipe.vae = ours
    untiled = _frames(pipe, **call)
    ours.enable_tiling(tile_sample_min_height=128, tile_sample_min_width=128, tile_sample_stride_height=96, tile_sample_stride_width=96)
    assert ours._tile("decoder") == (128, 128)
    tiled = _frames(pipe, **call)
    assert np.abs(tiled - untiled).max() < 1e-5
    assert np.abs(untiled - ref_untiled).max() < PIPELINE_TOL
    seam = np.abs(ref_tiled - ref_untiled).max()
    print(f"diffusers' tiled frames differ from its untiled ones by up to {seam:.3f} (of [0, 1])")
    assert seam > 1e-2


def test_encoder_tiles_are_read_in_patchified_pixels_for_wan22(vae22):
    ours = wanvae.for_diffusers(vae22)
    ours.enable_tiling(tile_sample_min_height=128, tile_sample_min_width=160)
    assert ours._tile("encoder") == (320, 256) and ours._tile("decoder") == (160, 128)
    x = _clip(5, 32, 512)
    tiled = ours.encode(x).latent_dist.mean
    ours.disable_tiling()
    assert (tiled - ours.encode(x).latent_dist.mean).abs().max() < 1e-5


def test_model_cpu_offload_runs_through_the_forward_hooks(vae21):
    pipe = tiny_wan_pipeline("i2v", wanvae.for_diffusers(vae21))
    call = {"num_frames": 5, "height": 32, "width": 32, "image": _image(32, 32, 1), "num_inference_steps": 1}
    want = _frames(pipe, **call)
    pipe.enable_model_cpu_offload(device="cpu")
    hook, calls = pipe.vae._hf_hook, []
    original = hook.pre_forward
    hook.pre_forward = lambda module, *a, **k: (calls.append(type(module).__name__), original(module, *a, **k))[1]
    got = _frames(pipe, **call)
    assert calls.count("WanVAEForDiffusers") == 2  # the conditioning encode and the decode
    assert np.array_equal(got, want)


def test_from_pretrained_takes_ours_and_saved_pipelines_load_either_vae(vae21, tmp_path):
    ref = reference_for(vae21)
    tiny_wan_pipeline("t2v", ref).save_pretrained(tmp_path / "pipe")
    call = {"num_frames": 5, "height": 32, "width": 32, "num_inference_steps": 1}
    ours = wanvae.for_diffusers(vae21)
    # No tokenizer was saved (prompts come as embeddings), so none is passed either.
    pipe = WanPipeline.from_pretrained(tmp_path / "pipe", vae=ours, tokenizer=None)
    assert pipe.vae is ours
    want = _frames(WanPipeline.from_pretrained(tmp_path / "pipe", tokenizer=None), **call)
    assert np.abs(_frames(pipe, **call) - want).max() < PIPELINE_TOL
    # A pipeline saved with our VAE writes diffusers' own VAE folder: both classes read it.
    pipe.save_pretrained(tmp_path / "ours")
    assert json.loads((tmp_path / "ours" / "vae" / "config.json").read_text())["_class_name"] == "AutoencoderKLWan"
    library, name = json.loads((tmp_path / "ours" / "model_index.json").read_text())["vae"]
    assert library.split(".")[0] == "wanvae" and name == "WanVAEForDiffusers"
    again = WanPipeline.from_pretrained(tmp_path / "ours", tokenizer=None)
    assert isinstance(again.vae, wanvae.WanVAEForDiffusers)
    theirs = AutoencoderKLWan.from_pretrained(tmp_path / "ours" / "vae")
    z = torch.randn(1, 16, 2, 4, 4)
    assert (theirs.decode(z).sample - again.vae.decode(z).sample).abs().max() < 1e-5


# ---- the other direction ---------------------------------------------------------------------
def test_load_takes_a_diffusers_object_and_gives_one_back(family):
    vae, ref = family
    x = _clip(5, 32, 32)
    back = wanvae.load(ref)
    assert back.config.family == vae.config.family
    assert torch.equal(back.encode(x), vae.encode(x))
    encoder_only = wanvae.load(ref, parts="encoder")
    assert encoder_only.parts == "encoder" and not hasattr(encoder_only, "decoder")
    assert wanvae.load(wanvae.for_diffusers(vae)) is vae
    theirs = wanvae.to_autoencoder_kl_wan(vae)
    assert type(theirs) is AutoencoderKLWan
    assert (theirs.encode(x).latent_dist.mode() - vae.encode_moments(x)[0]).abs().max() < 1e-5
    with pytest.raises(wanvae.CheckpointError, match="cannot load a Linear"):
        wanvae.load(torch.nn.Linear(2, 2))
