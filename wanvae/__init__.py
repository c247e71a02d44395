"""wanvae: the Wan 2.1 and Wan 2.2 causal video VAEs, exact, fast and memory-bounded."""

__version__ = "0.1.0"

from .causal import CausalState  # noqa: E402
from .config import VAEConfig, preset  # noqa: E402
from .model import WanVAE  # noqa: E402
from .stream import StreamDecoder, StreamEncoder  # noqa: E402
from .weights import CheckpointError, load, save  # noqa: E402
from .latents import load_latents, save_latents  # noqa: E402
from .pipeline import decode_file, encode_file  # noqa: E402
from .demo import demo_model  # noqa: E402

# The diffusers adapter imports diffusers (an optional extra): only when it is asked for.
_DIFFUSERS_NAMES = ("WanVAEForDiffusers", "for_diffusers", "to_autoencoder_kl_wan")


def __getattr__(name: str):
    if name in _DIFFUSERS_NAMES:
        try:
            from . import diffusers_adapter
        except ImportError as e:
            raise ImportError(f"wanvae.{name} needs diffusers: pip install 'wanvae[diffusers]' ({e})") from e
        return getattr(diffusers_adapter, name)
    raise AttributeError(f"module 'wanvae' has no attribute {name!r}")


__all__ = [
    "decode_file",
    "demo_model",
    "encode_file",
    "load_latents",
    "save_latents",
    "CausalState",
    "CheckpointError", "StreamDecoder", "StreamEncoder", "VAEConfig", "WanVAE", "load", "preset", "save", "__version__"]
