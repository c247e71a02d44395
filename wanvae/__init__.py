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

__all__ = [
    "decode_file",
    "demo_model",
    "encode_file",
    "load_latents",
    "save_latents",
    "CausalState",
    "CheckpointError", "StreamDecoder", "StreamEncoder", "VAEConfig", "WanVAE", "load", "preset", "save", "__version__"]
