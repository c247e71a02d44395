"""Training and fine-tuning: synthetic and real clips, the training loop, the bundled demo model."""
