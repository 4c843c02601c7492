"""Video transformer over latent spacetime patches (see maskvid/model/model.py)."""
from maskvid.model.model import build_model, example_inputs, flops_per_token, latent_grid, \
    make_apply_fn, matmul_params, num_tokens

__all__ = ['build_model', 'example_inputs', 'flops_per_token', 'latent_grid', 'make_apply_fn',
           'matmul_params', 'num_tokens']
