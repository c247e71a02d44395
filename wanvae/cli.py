"""The console script's entry point (`wanvae = "wanvae.cli:main"`); the commands live in `wanvae.commands`."""

from .commands.main import main

__all__ = ["main"]
