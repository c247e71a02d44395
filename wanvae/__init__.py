"""wanvae: the Wan 2.1 causal video VAE, exact, fast and memory-bounded."""

from .causal import CausalState
from .config import VAEConfig, preset
from .model import WanVAE

__version__ = "0.1.0"

__all__ = ["CausalState", "VAEConfig", "WanVAE", "preset", "__version__"]
