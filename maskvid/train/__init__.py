"""Training: mesh and sharding, train state, the pure train step, checkpoints, the loop."""
