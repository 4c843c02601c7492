"""What every trainer shares (diffusion transformer, VAE, depth net): each supplies its model and
loss, these supply the rest.

state       TrainState (step, params, opt_state, ema_params or None, rng), apply_gradients, loss_step
sharded     ShardedStep: logical axes -> mesh shardings, jitted init/step with explicit in/out
            shardings and donation, `lower()` on abstract inputs (the pod compile job)
checkpoint  orbax save / restore of the whole state, partial restore of params for inference
loop        run(): progress, metrics, NaN checks, checkpoints, SIGTERM, periodic eval
The optimizer builder is `maskvid.optim`.
"""
