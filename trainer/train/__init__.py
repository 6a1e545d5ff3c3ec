"""Training: models, the fit loop, checkpoints and the run folder, distribution strategies."""
