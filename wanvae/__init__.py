"""wanvae: the Wan 2.1 and Wan 2.2 causal video VAEs, exact, fast and memory-bounded.

The public names load on first use: `import wanvae` (and the `wanvae` command, which checks
its arguments before anything else) does not import torch until a name that needs it is
touched, and never imports diffusers unless the diffusers adapter is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS = {
    "CausalState": "coding.state",
    "VAEConfig": "config",
    "preset": "config",
    "WanVAE": "model.vae",
    "StreamDecoder": "coding.stream",
    "StreamEncoder": "coding.stream",
    "CheckpointError": "io.weights",
    "load": "io.weights",
    "save": "io.weights",
    "load_latents": "io.latents",
    "save_latents": "io.latents",
    "decode_file": "io.files",
    "encode_file": "io.files",
    "demo_model": "training.demo",
    # diffusers is an optional extra (pip install 'wanvae[diffusers]')
    "WanVAEForDiffusers": "integrations.diffusers",
    "for_diffusers": "integrations.diffusers",
    "to_autoencoder_kl_wan": "integrations.diffusers",
}
_NEEDS_DIFFUSERS = {"WanVAEForDiffusers", "for_diffusers", "to_autoencoder_kl_wan"}
# Submodules reachable as attributes after a plain `import wanvae` (wanvae.data.LatentDataset).
_SUBMODULES = {"data"}


def __getattr__(name: str):
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'wanvae' has no attribute {name!r}")
    import importlib

    try:
        module = importlib.import_module(f".{module_name}", __name__)
    except ImportError as e:
        if name in _NEEDS_DIFFUSERS and "diffusers" in str(e):
            raise ImportError(f"wanvae.{name} needs diffusers: pip install 'wanvae[diffusers]' ({e})") from e
        raise
    value = getattr(module, name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS, *_SUBMODULES])


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .coding.state import CausalState
    from .config import VAEConfig, preset
    from .training.demo import demo_model
    from .io.latents import load_latents, save_latents
    from .model.vae import WanVAE
    from .io.files import decode_file, encode_file
    from .coding.stream import StreamDecoder, StreamEncoder
    from .io.weights import CheckpointError, load, save

# Without the diffusers names: `from wanvae import *` must not import diffusers.
__all__ = [
    "CausalState", "CheckpointError", "StreamDecoder", "StreamEncoder", "VAEConfig", "WanVAE", "__version__",
    "decode_file", "demo_model", "encode_file", "load", "load_latents", "preset", "save", "save_latents",
]
