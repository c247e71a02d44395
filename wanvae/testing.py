"""Test support, not the public API: random weights at a sane scale, diffusers as the reference.

Not used by the library itself. diffusers is imported only when a reference is asked for.
"""

from __future__ import annotations

import math

import torch

from .model.vae import WanVAE


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    Read from /proc (VmHWM), not getrusage: ru_maxrss survives exec, so a child started
    from a big parent would report the parent's peak instead of its own.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@torch.no_grad()
def randomize(vae: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random with activations near 1: weights ~ N(0, 1/fan_in), gammas
    1 +- 0.2, biases ~ 0.05. The zero-initialised attention `proj` is randomised too, or
    attention would be invisible to a parity check."""
    g = torch.Generator().manual_seed(seed)
    for name, p in vae.named_parameters():
        if name.endswith("gamma"):
            p.copy_(1 + 0.2 * (2 * torch.rand(p.shape, generator=g) - 1))
        elif name.endswith("bias"):
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
    return vae.eval()


def reference_for(vae: WanVAE, device: str | torch.device = "cpu"):
    """diffusers' own class (AutoencoderKLWan, or AutoencoderKLQwenImage for a Qwen-Image
    VAE) with the same weights mapped across. An upscaling decoder's reference gives the
    head's channels unshuffled: pixel-shuffle its frames to compare."""
    import diffusers

    from .io.weights import diffusers_config, original_to_diffusers

    config = diffusers_config(vae.config)
    kwargs = {k: v for k, v in config.items() if not k.startswith("_")}
    with torch.device(device):
        ref = getattr(diffusers, config["_class_name"])(**kwargs).eval()
    ref.load_state_dict({original_to_diffusers(k, vae.config): v for k, v in vae.state_dict().items()}, strict=True)
    return ref


@torch.no_grad()
def reference_decode_unclamped(ref, z_raw: torch.Tensor) -> torch.Tensor:
    """diffusers' own `_decode` loop (one latent frame per call), without its final clamp."""
    ref.clear_cache()
    x = ref.post_quant_conv(z_raw)
    outs = []
    for i in range(z_raw.shape[2]):
        ref._conv_idx = [0]
        outs.append(ref.decoder(x[:, :, i : i + 1], feat_cache=ref._feat_map, feat_idx=ref._conv_idx, first_chunk=i == 0))
    ref.clear_cache()
    return torch.cat(outs, dim=2)


def tiny_wan_pipeline(kind: str, vae, *, expand_timesteps: bool = False, seed: int = 0):
    """A real diffusers Wan pipeline around `vae`, every other component tiny and random
    (no hub, no tokenizer: pass `prompt_embeds` [B, L, 32]).

    `kind`: 't2v' (WanPipeline), 'i2v' (WanImageToVideoPipeline; with a tiny CLIP image
    encoder unless `expand_timesteps`, the TI2V-5B way), 'flf2v' (the same pipeline for
    first-and-last-frame: its transformer embeds two images) or 'v2v' (WanVideoToVideoPipeline).
    """
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        WanImageToVideoPipeline,
        WanPipeline,
        WanTransformer3DModel,
        WanVideoToVideoPipeline,
    )
    import transformers
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, UMT5Config, UMT5EncoderModel

    # transformers 5 prefers a torchvision backend it then warns is missing; the PIL one is the same.
    CLIPImageProcessor = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor

    z = vae.config.z_dim
    torch.manual_seed(seed)
    heads, head_dim, clip_dim = 2, 8, 8
    text_encoder = UMT5EncoderModel(
        UMT5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=32, num_layers=1, num_heads=2, relative_attention_num_buckets=8)
    ).eval()
    clip = kind in ("i2v", "flf2v") and not expand_timesteps
    clip_tokens = (32 // 8) ** 2 + 1  # the tiny CLIP's patches and its class token
    # Wan 2.1's image-to-video transformer sees noise, the conditioning latents and a
    # 4-channel frame mask; TI2V writes the image's latents into the noise instead.
    in_channels = 2 * z + 4 if clip else z
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=head_dim, in_channels=in_channels,
        out_channels=z, text_dim=32, freq_dim=32, ffn_dim=32, num_layers=2, rope_max_seq_len=32,
        image_dim=clip_dim if clip else None, added_kv_proj_dim=heads * head_dim if clip else None,
        pos_embed_seq_len=2 * clip_tokens if kind == "flf2v" else None,
    ).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    common = dict(tokenizer=None, text_encoder=text_encoder, transformer=transformer, vae=vae, scheduler=scheduler)
    if kind in ("t2v", "v2v"):
        pipe = WanPipeline(**common, expand_timesteps=expand_timesteps) if kind == "t2v" else WanVideoToVideoPipeline(**common)
        pipe.set_progress_bar_config(disable=True)
        return pipe
    if kind not in ("i2v", "flf2v"):
        raise ValueError(f"kind must be 't2v', 'i2v', 'flf2v' or 'v2v', got {kind!r}")
    image_encoder = image_processor = None
    if clip:
        image_encoder = CLIPVisionModelWithProjection(
            CLIPVisionConfig(hidden_size=clip_dim, projection_dim=clip_dim, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=16, image_size=32, patch_size=8)
        ).eval()
        image_processor = CLIPImageProcessor(crop_size=32, size=32)
    pipe = WanImageToVideoPipeline(
        **common, image_encoder=image_encoder, image_processor=image_processor, expand_timesteps=expand_timesteps
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
