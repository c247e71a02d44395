"""wanvae inside other libraries (diffusers)."""
