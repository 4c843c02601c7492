"""External weights: a torch-free diffusers-named safetensors file maps onto the Linen tree."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from maskvid.vae import external
from maskvid.vae import model

# Tiny diffusers-style AutoencoderKL: block_out_channels=(8, 16), layers_per_block=1,
# norm_num_groups=4, latent_channels=4, mid-block attention.
BLOCKS = (8, 16)
LATENT = 4


def _resnet(prefix, cin, cout, rng, old_style=False):
  sd = {
      f'{prefix}.norm1.weight': rng.normal(size=cin), f'{prefix}.norm1.bias': rng.normal(size=cin),
      f'{prefix}.conv1.weight': rng.normal(size=(cout, cin, 3, 3)),
      f'{prefix}.conv1.bias': rng.normal(size=cout),
      f'{prefix}.norm2.weight': rng.normal(size=cout),
      f'{prefix}.norm2.bias': rng.normal(size=cout),
      f'{prefix}.conv2.weight': rng.normal(size=(cout, cout, 3, 3)),
      f'{prefix}.conv2.bias': rng.normal(size=cout),
  }
  if cin != cout:
    sd[f'{prefix}.conv_shortcut.weight'] = rng.normal(size=(cout, cin, 1, 1))
    sd[f'{prefix}.conv_shortcut.bias'] = rng.normal(size=cout)
  return sd


def _mid(prefix, c, rng, old_style):
  sd = {**_resnet(f'{prefix}.resnets.0', c, c, rng), **_resnet(f'{prefix}.resnets.1', c, c, rng)}
  a = f'{prefix}.attentions.0'
  sd[f'{a}.group_norm.weight'] = rng.normal(size=c)
  sd[f'{a}.group_norm.bias'] = rng.normal(size=c)
  names = ('query', 'key', 'value', 'proj_attn') if old_style else ('to_q', 'to_k', 'to_v',
                                                                     'to_out.0')
  for n in names:
    # Old checkpoints sometimes store the projections as 1x1 convs.
    shape = (c, c, 1, 1) if old_style else (c, c)
    sd[f'{a}.{n}.weight'] = rng.normal(size=shape)
    sd[f'{a}.{n}.bias'] = rng.normal(size=c)
  return sd


def diffusers_state_dict(seed=0, old_style=False):
  rng = np.random.default_rng(seed)
  sd = {'encoder.conv_in.weight': rng.normal(size=(BLOCKS[0], 3, 3, 3)),
        'encoder.conv_in.bias': rng.normal(size=BLOCKS[0])}
  cin = BLOCKS[0]
  for i, c in enumerate(BLOCKS):
    sd.update(_resnet(f'encoder.down_blocks.{i}.resnets.0', cin, c, rng))
    cin = c
    if i < len(BLOCKS) - 1:
      sd[f'encoder.down_blocks.{i}.downsamplers.0.conv.weight'] = rng.normal(size=(c, c, 3, 3))
      sd[f'encoder.down_blocks.{i}.downsamplers.0.conv.bias'] = rng.normal(size=c)
  sd.update(_mid('encoder.mid_block', BLOCKS[-1], rng, old_style))
  sd['encoder.conv_norm_out.weight'] = rng.normal(size=BLOCKS[-1])
  sd['encoder.conv_norm_out.bias'] = rng.normal(size=BLOCKS[-1])
  sd['encoder.conv_out.weight'] = rng.normal(size=(2 * LATENT, BLOCKS[-1], 3, 3))
  sd['encoder.conv_out.bias'] = rng.normal(size=2 * LATENT)
  sd['quant_conv.weight'] = rng.normal(size=(2 * LATENT, 2 * LATENT, 1, 1))
  sd['quant_conv.bias'] = rng.normal(size=2 * LATENT)
  sd['post_quant_conv.weight'] = rng.normal(size=(LATENT, LATENT, 1, 1))
  sd['post_quant_conv.bias'] = rng.normal(size=LATENT)
  rev = tuple(reversed(BLOCKS))
  sd['decoder.conv_in.weight'] = rng.normal(size=(rev[0], LATENT, 3, 3))
  sd['decoder.conv_in.bias'] = rng.normal(size=rev[0])
  sd.update(_mid('decoder.mid_block', rev[0], rng, old_style))
  cin = rev[0]
  for i, c in enumerate(rev):
    for j in range(2):  # layers_per_block + 1
      sd.update(_resnet(f'decoder.up_blocks.{i}.resnets.{j}', cin, c, rng))
      cin = c
    if i < len(rev) - 1:
      sd[f'decoder.up_blocks.{i}.upsamplers.0.conv.weight'] = rng.normal(size=(c, c, 3, 3))
      sd[f'decoder.up_blocks.{i}.upsamplers.0.conv.bias'] = rng.normal(size=c)
  sd['decoder.conv_norm_out.weight'] = rng.normal(size=BLOCKS[0])
  sd['decoder.conv_norm_out.bias'] = rng.normal(size=BLOCKS[0])
  sd['decoder.conv_out.weight'] = rng.normal(size=(3, BLOCKS[0], 3, 3))
  sd['decoder.conv_out.bias'] = rng.normal(size=3)
  return {k: (0.1 * v).astype(np.float32) for k, v in sd.items()}


def _module():
  return model.AutoencoderKL(latent_channels=LATENT, base_channels=8, channel_multipliers=(1, 2),
                             num_res_blocks=1, norm_groups=4, mid_attention=True)


def test_map_key_rules():
  assert external.map_key('encoder.down_blocks.0.resnets.1.norm1.weight') == (
      'encoder', 'down_blocks_0', 'resnets_1', 'norm1', 'weight')
  assert external.map_key('decoder.mid_block.attentions.0.to_out.0.bias') == (
      'decoder', 'mid_block', 'attentions_0', 'to_out_0', 'bias')
  assert external.map_key('encoder.mid_block.attentions.0.proj_attn.weight') == (
      'encoder', 'mid_block', 'attentions_0', 'to_out_0', 'weight')


@pytest.mark.slow
@pytest.mark.parametrize('old_style', [False, True])
def test_load_safetensors_maps_every_param(tmp_path, old_style):
  sd = diffusers_state_dict(old_style=old_style)
  path = str(tmp_path / 'vae.safetensors')
  save_file(sd, path)
  vae = _module()
  params = external.load_safetensors(path, vae, frame_size=16)
  p = params['params']
  np.testing.assert_array_equal(p['encoder']['conv_in']['kernel'],
                                sd['encoder.conv_in.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(p['encoder']['down_blocks_0']['resnets_0']['norm1']['scale'],
                                sd['encoder.down_blocks.0.resnets.0.norm1.weight'])
  np.testing.assert_array_equal(
      p['decoder']['up_blocks_1']['resnets_1']['conv2']['bias'],
      sd['decoder.up_blocks.1.resnets.1.conv2.bias'])
  q = sd['encoder.mid_block.attentions.0.' + ('query' if old_style else 'to_q') + '.weight']
  np.testing.assert_array_equal(p['encoder']['mid_block']['attentions_0']['to_q']['kernel'],
                                q.reshape(q.shape[0], q.shape[1]).T)
  # Every Linen leaf is covered once, and the values round-trip through the inverse mapping.
  n_leaves = len(jax.tree.leaves(params))
  assert n_leaves == len(sd)
  if not old_style:
    back = external.to_state_dict(params)
    assert sorted(back) == sorted(sd)
    for k in sd:
      np.testing.assert_array_equal(back[k], sd[k])
  frames = jnp.linspace(-1, 1, 2 * 16 * 16 * 3).reshape(1, 2, 16, 16, 3)
  mean, logvar = vae.apply(params, frames, method=vae.encode)
  assert mean.shape == (1, 2, 8, 8, LATENT) and np.all(np.isfinite(mean))
  assert vae.apply(params, mean, method=vae.decode).shape == frames.shape


def test_conv_transpose_matches_torch_semantics(tmp_path):
  """conv_in of the mapped weights equals a direct cross-correlation with OIHW weights."""
  sd = diffusers_state_dict(seed=1)
  path = str(tmp_path / 'vae.safetensors')
  save_file(sd, path)
  params = external.load_safetensors(path, _module(), frame_size=16)
  x = np.random.default_rng(0).normal(size=(1, 6, 6, 3)).astype(np.float32)
  conv = params['params']['encoder']['conv_in']
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  y = nn.Conv(8, (3, 3), padding=1).apply({'params': conv}, x)
  w, b = sd['encoder.conv_in.weight'], sd['encoder.conv_in.bias']
  xp = np.pad(x[0], ((1, 1), (1, 1), (0, 0)))
  ref = np.zeros((6, 6, 8), np.float32)
  for i in range(6):
    for j in range(6):
      # torch Conv2d is a cross-correlation: out[o] = sum_ihw x[h, w, i] * W[o, i, h, w] + b[o]
      ref[i, j] = np.einsum('hwi,oihw->o', xp[i:i + 3, j:j + 3], w) + b
  np.testing.assert_allclose(y[0], ref, rtol=1e-4, atol=1e-4)


def test_mismatch_is_reported(tmp_path):
  sd = diffusers_state_dict()
  del sd['decoder.conv_out.bias']
  sd['encoder.extra.weight'] = np.zeros(3, np.float32)
  sd['encoder.conv_in.weight'] = np.zeros((8, 3, 5, 5), np.float32)
  path = str(tmp_path / 'vae.safetensors')
  save_file(sd, path)
  with pytest.raises(ValueError, match=r'1 missing.*decoder/conv_out/bias.*1 unexpected.*'
                     r'encoder.extra.weight.*1 shape mismatches.*encoder.conv_in.weight'):
    external.load_safetensors(path, _module(), frame_size=16)
  with pytest.raises(FileNotFoundError, match='nope.safetensors'):
    external.load_safetensors(str(tmp_path / 'nope.safetensors'), _module())


@pytest.mark.slow
def test_external_vae_instead_of_training_one(tmp_path):
  """configs/pretrain.py's path: `vae.external_weights` + `vae.train.steps=0` saves the external
  weights as the VAE stage's checkpoint, and the latent cache encodes with them."""
  from maskvid import stages  # pylint: disable=g-import-not-at-top
  from maskvid.vae import cache  # pylint: disable=g-import-not-at-top
  from maskvid.vae import model as vae_model  # pylint: disable=g-import-not-at-top
  from maskvid.vae import testing  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / 'vae.safetensors')
  sd = diffusers_state_dict(seed=3)
  save_file(sd, path)
  c = testing.tiny_config(steps=0)
  c.vae.mid_attention, c.vae.linear_skip = True, False     # the diffusers architecture
  c.vae.external_weights = path
  c.data.clips = {'train': 4, 'test': 2}
  workdir = str(tmp_path / 'run')
  stages.run_vae(c, workdir)
  _, params = vae_model.load_vae(str(tmp_path / 'run' / 'vae'))
  np.testing.assert_array_equal(params['params']['encoder']['conv_in']['kernel'],
                                sd['encoder.conv_in.weight'].transpose(2, 3, 1, 0))
  stages.run_cache(c, workdir)
  assert len(cache.LatentSource(str(tmp_path / 'run' / 'latents'), 'train')) == 4
