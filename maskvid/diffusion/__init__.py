"""The masked flow-matching objective and the transformer's trainer.

schedule      add_noise, velocity_target, sample_t, token_times (t = 0 exactly on known tokens)
mask_mixture  sample_known_mask (mixture of mask types on the patch grid, bool [B,T,h,w], True = known)
loss          masked_flow_loss (objectives: masked | conditioning | unconditional)
trainer       train_step, Trainer (the shared sharded step over the run's mesh)
train         train_and_evaluate: the diffusion stage (latent cache -> checkpoints, preview)
"""
