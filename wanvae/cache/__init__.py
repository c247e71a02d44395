"""`wanvae cache`: precompute latents for a whole training set, resumable, on local processes or Ray."""
