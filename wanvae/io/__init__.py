"""Files in and out: checkpoints, latents files, videos and images, atomic writes, and values checked from text."""
