"""Masked flow-matching objective.

schedule  add_noise, velocity_target, sample_t, token_times (t = 0 exactly on known tokens)
masks     sample_known_mask (mixture of mask types on the patch grid, bool [B,T,h,w], True = known)
loss      masked_flow_loss (objectives: masked | conditioning | unconditional)
"""
