"""Depth Anything V2: the Flax port against pinned PyTorch outputs, weights files, the estimator.

The pins come from tests/data/depth_anything_reference.py (run with torch in a throwaway venv);
random weights are regenerated here from its key list and seed, so only ~0.4 MB is stored.
"""
import importlib.util
import json
import os
import pickle
import zipfile

import imageio.v3 as iio
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from safetensors.numpy import save_file

from maskvid import depth as md
from maskvid.depth import depth_anything as da
from maskvid.depth import dinov2
from maskvid.depth import torch_zip
from maskvid.tasks import nvs

DATA = os.path.join(os.path.dirname(__file__), 'data')
TOLERANCE = 1e-4   # the bound; measured <= 2e-6 at the output and every block
TINY = da.Config('tiny', embed_dim=32, depth=4, num_heads=2, features=8,
                 out_channels=(4, 8, 16, 16), layers=(0, 1, 2, 3), pos_grid=8)
PINNED = ([f'block_{i}' for i in range(12)] + [f'feature_{k}' for k in range(4)]
          + [f'reassemble_{k}' for k in range(4)] + [f'layer{k}_rn' for k in range(1, 5)]
          + [f'refinenet{k}' for k in range(4, 0, -1)] + ['output_conv1'])


def _reference_module():
  spec = importlib.util.spec_from_file_location(
      'depth_anything_reference', os.path.join(DATA, 'depth_anything_reference.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)   # numpy only at import: torch is imported inside main()
  return module


ref = _reference_module()


@jax.jit
def _forward_with_taps(params, x):
  out, inter = da.DepthAnythingV2(da.CONFIGS['vits']).apply(params, x, mutable=['intermediates'])
  taps = {k[-1].removesuffix('_out'): v[0]
          for k, v in traverse_util.flatten_dict(inter['intermediates']).items()}
  return out, taps


@pytest.fixture(scope='module')
def small():
  pinned = np.load(os.path.join(DATA, 'depth_anything_small.npz'))
  shapes = json.loads(str(pinned['shapes']))
  weights = ref.random_state_dict(shapes, seed=0)
  x = jnp.asarray(ref.random_input(ref.SMALL_INPUT, seed=1).transpose(0, 2, 3, 1))
  params = da.params_from_original(weights, da.CONFIGS['vits'])
  out, taps = _forward_with_taps(params, x)
  return dict(pinned=pinned, shapes=shapes, weights=weights, params=params, x=x,
              out=np.asarray(out), taps=jax.tree.map(np.asarray, taps))


def _summary(pinned, name):
  return {f: pinned[f'{name}/{f}'] for f in ('sample', 'stats', 'proj')}


def _tiny_tensors():
  return torch_zip.read_torch_zip(os.path.join(DATA, 'depth_anything_tiny.pth'))


_tiny_apply = jax.jit(da.DepthAnythingV2(TINY).apply)


def _tiny_output(params):
  x = ref.random_input(ref.TINY_INPUT, seed=3).transpose(0, 2, 3, 1)
  return np.asarray(_tiny_apply(params, jnp.asarray(x)))


# ------------------------------------------------------------------------------- the network

def test_small_architecture_has_the_reference_state_dict(small):
  assert da.expected_shapes(da.CONFIGS['vits']) == {k: tuple(s) for k, s in small['shapes']}
  # The random weights are the reference's (numpy's generator stream did not drift).
  sums = [np.float64(small['weights'][k]).sum() for k, _ in small['shapes']]
  np.testing.assert_array_equal(sums, small['pinned']['weight_sums'])
  n = sum(int(np.prod(s)) for _, s in small['shapes'])
  assert n == 24_785_089   # the released Small's 24.8M parameters


def test_small_matches_reference_output_and_every_block(small):
  assert sorted(small['taps']) == sorted(PINNED)
  errors = {name: ref.relative_error(small['taps'][name], _summary(small['pinned'], name))
            for name in PINNED}
  want = small['pinned']['output']
  errors['output'] = float(np.abs(small['out'] - want).max() / np.abs(want).max())
  worst = max(errors, key=errors.get)
  assert errors[worst] <= TOLERANCE, f'{worst}: {errors[worst]:.2e}'
  assert (want > 0).mean() > 0.5   # the comparison is not of a ReLU-flattened output


def test_a_wrong_layer_is_found_at_its_block(small):
  flat = traverse_util.flatten_dict(small['params'])
  key = ('params', 'pretrained', 'blocks_7', 'mlp', 'fc1', 'bias')
  flat[key] = flat[key] + 0.01
  _, taps = _forward_with_taps(traverse_util.unflatten_dict(flat), small['x'])
  err = {n: ref.relative_error(np.asarray(taps[n]), _summary(small['pinned'], n))
         for n in ('block_6', 'block_7', 'output_conv1')}
  assert err['block_6'] <= TOLERANCE < err['block_7'] and err['output_conv1'] > TOLERANCE


def test_resizes_equal_torch():
  pinned = np.load(os.path.join(DATA, 'depth_anything_small.npz'))
  grid = pinned['interp/input'][0].transpose(1, 2, 0)[None]     # [1, 37, 37, 4]
  for h, w in ref.INTERP_GRIDS:
    mh = dinov2.torch_bicubic_matrix(37, h, (h + 0.1) / 37)
    mw = dinov2.torch_bicubic_matrix(37, w, (w + 0.1) / 37)
    got = np.einsum('oh,hwc,pw->opc', mh, grid[0], mw)
    np.testing.assert_allclose(got, pinned[f'interp/{h}x{w}'][0].transpose(1, 2, 0),
                               atol=1e-5, err_msg=f'{h}x{w}')
  small_in = pinned['bilinear/input'][0].transpose(1, 2, 0)[None]
  for h, w in ref.BILINEAR_SIZES:
    mh, mw = (dinov2.bilinear_align_corners_matrix(n, m) for n, m in ((5, h), (7, w)))
    got = np.einsum('oh,hwc,pw->opc', mh, small_in[0], mw)
    np.testing.assert_allclose(got, pinned[f'bilinear/{h}x{w}'][0].transpose(1, 2, 0),
                               atol=1e-6, err_msg=f'{h}x{w}')


# ------------------------------------------------------------------------------ weights files

def test_torch_saved_pth_loads_and_matches_reference():
  config, params = da.load_depth_anything(os.path.join(DATA, 'depth_anything_tiny.pth'), TINY)
  assert config == TINY
  want = np.load(os.path.join(DATA, 'depth_anything_tiny.npz'))['output']
  got = _tiny_output(params)
  assert np.abs(got - want).max() <= TOLERANCE * np.abs(want).max()


def test_transformers_safetensors_gives_identical_output(tmp_path):
  tensors = {k: v.astype(np.float32) for k, v in _tiny_tensors().items()}
  hf = da.original_to_hf(tensors)
  for key in ('backbone.embeddings.patch_embeddings.projection.weight',
              'backbone.encoder.layer.3.attention.attention.value.bias',
              'neck.reassemble_stage.layers.0.resize.weight', 'neck.convs.3.weight',
              'neck.fusion_stage.layers.0.residual_layer2.convolution1.weight', 'head.conv3.bias'):
    assert key in hf, key
  # transformers numbers fusion layers coarse to fine: its layer 0 is refinenet4.
  np.testing.assert_array_equal(hf['neck.fusion_stage.layers.0.projection.weight'],
                                tensors['depth_head.scratch.refinenet4.out_conv.weight'])
  path = str(tmp_path / 'model.safetensors')
  save_file(hf, path)
  _, from_hf = da.load_depth_anything(path, TINY)
  _, from_pth = da.load_depth_anything(os.path.join(DATA, 'depth_anything_tiny.pth'), TINY)
  np.testing.assert_array_equal(_tiny_output(from_hf), _tiny_output(from_pth))


def test_transformers_5_attention_names_load(tmp_path):
  """transformers >= 5 re-saves the attention as q/k/v/o_proj (the Hub files predate it)."""
  names = {'attention.attention.query': 'attention.q_proj', 'attention.attention.key':
           'attention.k_proj', 'attention.attention.value': 'attention.v_proj',
           'attention.output.dense': 'attention.o_proj'}
  hf = da.original_to_hf(_tiny_tensors())
  for old, new in names.items():
    hf = {k.replace(old, new): v for k, v in hf.items()}
  assert 'backbone.encoder.layer.3.attention.o_proj.bias' in hf
  assert da.hf_to_original(hf).keys() == _tiny_tensors().keys()
  path = str(tmp_path / 'v5.safetensors')
  save_file(hf, path)
  _, params = da.load_depth_anything(path, TINY)
  want = np.load(os.path.join(DATA, 'depth_anything_tiny.npz'))['output']
  assert np.abs(_tiny_output(params) - want).max() <= TOLERANCE * np.abs(want).max()


def test_key_mapping_round_trips(small):
  w = small['weights']
  back = da.hf_to_original(da.original_to_hf(w))
  assert back.keys() == w.keys()
  assert all(np.array_equal(back[k], w[k]) for k in w)
  flax_back = da.to_original(small['params'])
  assert flax_back.keys() == w.keys() and all(np.array_equal(flax_back[k], w[k]) for k in w)


@pytest.mark.slow
def test_base_and_large_layouts_map_both_ways():
  for name, params in (('vitb', 97.5e6), ('vitl', 335.3e6)):
    shapes = da.expected_shapes(da.CONFIGS[name])
    assert sum(np.prod(s) for s in shapes.values()) == pytest.approx(params, rel=1e-3)
    # Key names only (qkv split into three 1-element parts and fused back).
    hf = da.original_to_hf({k: np.zeros(3, np.float32) for k in shapes})
    assert len(hf) == len(shapes) + 2 * da.CONFIGS[name].depth * 2
    assert da.hf_to_original(hf).keys() == shapes.keys()


def _one_line_error(exc_type, path, config=None):
  with pytest.raises(exc_type) as e:
    da.load_depth_anything(path, config)
  msg = str(e.value)
  assert '\n' not in msg and path in msg, msg
  return msg


def test_bad_weights_files_stop_with_one_line(tmp_path):
  pth = os.path.join(DATA, 'depth_anything_tiny.pth')
  assert 'file not found' in _one_line_error(FileNotFoundError, str(tmp_path / 'none.pth'))
  cut = str(tmp_path / 'cut.pth')
  with open(pth, 'rb') as src, open(cut, 'wb') as dst:
    dst.write(src.read()[:50_000])
  assert 'truncated?' in _one_line_error(ValueError, cut)
  cut_st = str(tmp_path / 'cut.safetensors')
  save_file(da.original_to_hf(_tiny_tensors()), cut_st)
  with open(cut_st, 'r+b') as f:
    f.truncate(os.path.getsize(cut_st) // 2)
  assert 'truncated?' in _one_line_error(ValueError, cut_st)
  # The tiny file is no released variant: its width, then its shapes against vits, are named.
  assert 'no variant has it' in _one_line_error(ValueError, pth)
  msg = _one_line_error(ValueError, pth, da.CONFIGS['vits'])
  assert "tensor 'pretrained.cls_token' has shape (1, 1, 32)" in msg and 'vits' in msg
  tensors = {k: v for k, v in _tiny_tensors().items() if k != 'pretrained.blocks.2.norm1.bias'}
  missing = str(tmp_path / 'missing.safetensors')
  save_file(da.original_to_hf(tensors), missing)
  assert "missing tensor 'pretrained.blocks.2.norm1.bias'" in _one_line_error(
      ValueError, missing, TINY)
  extra = str(tmp_path / 'extra.safetensors')
  save_file(dict(_tiny_tensors(), **{'depth_head.extra.weight': np.zeros(2, np.float16)}), extra)
  assert "unexpected tensor 'depth_head.extra.weight'" in _one_line_error(ValueError, extra, TINY)


def test_torch_zip_reader_refuses_code(tmp_path):
  path = str(tmp_path / 'evil.pth')
  with zipfile.ZipFile(path, 'w') as z:
    z.writestr('archive/data.pkl', pickle.dumps({'a': os.getcwd}, protocol=2))
  with pytest.raises(ValueError, match='refusing global posix.getcwd'):
    torch_zip.read_torch_zip(path)


# ----------------------------------------------------------------------------- the estimator

def test_preprocessing_follows_the_reference():
  assert da.network_size(480, 640) == (518, 686)     # the transformers conversion's 480x640 case
  assert da.network_size(98, 126) == (518, 672)
  assert da.network_size(1080, 1920, 518) == (518, 924)
  assert da.network_size(40, 60, 56) == (56, 84)
  x = da.preprocess(np.full((30, 20, 3), 128, np.uint8), 56)
  assert x.shape == (84, 56, 3)
  np.testing.assert_allclose(x[5, 5], (128 / 255 - da.MEAN) / da.STD, rtol=1e-6)


def test_depth_rule():
  disp = np.array([[[4.0, 2.0, 2.0, 0.0]]])   # median of positives: 2
  np.testing.assert_allclose(da.depth_from_disparity(disp, 3.0, 0.01),
                             [[[1.5, 3.0, 3.0, 300.0]]])


def test_estimator_batches_and_resizes_back():
  _, params = da.load_depth_anything(os.path.join(DATA, 'depth_anything_tiny.pth'), TINY)
  est = da.DepthAnythingEstimator(TINY, params, input_size=56, scale=2.0, batch_size=2)
  rgb = np.random.default_rng(0).integers(0, 256, (3, 40, 60, 3), dtype=np.uint8)
  disp = est.disparity(rgb)      # 3 frames in batches of 2: the last one padded
  x = np.stack([da.preprocess(f, 56) for f in rgb])
  net = np.asarray(_tiny_apply(params, jnp.asarray(x)))   # [3, 56, 84]
  want = np.einsum('oh,nhw,pw->nop', dinov2.bilinear_align_corners_matrix(56, 40), net,
                   dinov2.bilinear_align_corners_matrix(84, 60))
  np.testing.assert_allclose(disp, want, rtol=1e-5, atol=1e-6)
  depth = est.estimate(rgb)
  np.testing.assert_allclose(depth, da.depth_from_disparity(want, 2.0, 0.01), rtol=1e-4)
  np.testing.assert_allclose(np.median(depth, axis=(1, 2)), 2.0, rtol=0.05)
  np.testing.assert_allclose(est.estimate(rgb[1]), depth[1], rtol=1e-5)


@pytest.fixture(scope='module')
def small_file(small, tmp_path_factory):
  """The Small weights in the transformers layout, as the released model.safetensors."""
  path = str(tmp_path_factory.mktemp('weights') / 'model.safetensors')
  save_file(da.original_to_hf(small['weights']), path)
  return path


@pytest.mark.slow
def test_nvs_with_depth_anything_runs_end_to_end(small_file, tmp_path):
  from tests.test_tasks import FakeCompleter  # pylint: disable=g-import-not-at-top
  img = np.random.default_rng(4).integers(0, 256, (28, 56, 3), dtype=np.uint8)
  iio.imwrite(tmp_path / 'in.png', img)
  spec = f'depth_anything:{small_file}?scale=3&size=28'
  nvs.check_depth_arg(spec, str(tmp_path / 'in.png'))
  est = md.make_depth_estimator(spec)
  assert (est.config.name, est.scale, est.input_size) == ('vits', 3.0, 28)
  _, depth, _ = nvs.prepare_inputs(str(tmp_path / 'in.png'), spec, (32, 32), 60.0)
  assert depth.shape == (28, 56)
  np.testing.assert_array_equal(depth, est.estimate(img))
  assert np.median(depth) == pytest.approx(3.0, rel=0.05)
  mp4, _ = nvs.command(image=str(tmp_path / 'in.png'), trajectory='orbit', checkpoint='unused',
                       out=str(tmp_path / 'nvs.mp4'), depth=spec, num_frames=3,
                       completer=FakeCompleter())
  assert iio.imread(mp4, index=None).shape[0] == 3


@pytest.mark.parametrize('spec,match', [
    ('depth_anything:/nonexistent.pth', 'file not found'),
    ('depth_anything:', 'expected auto, plane'),
])
def test_nvs_rejects_bad_depth_anything_args(spec, match):
  with pytest.raises(Exception, match=match):
    nvs.check_depth_arg(spec, 'in.png')


def test_bad_spec_options(small_file):
  with pytest.raises(ValueError, match="unknown option 'scal'"):
    md.make_depth_estimator(f'depth_anything:{small_file}?scal=2')
  with pytest.raises(ValueError, match='bad option value'):
    md.make_depth_estimator(f'depth_anything:{small_file}?size=big')
