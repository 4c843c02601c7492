"""The posed benchmark cases: SEVA's crop-then-resize image rule with its intrinsics, the case
layout, and the synthetic clip as one instance of the protocol."""
import dataclasses

import cv2
import numpy as np
import pytest

from maskvid import posed
from maskvid.geometry import forward_warp
from maskvid.posed import export, protocol

H, W, T = 48, 64, 8


@pytest.fixture(scope='module')
def rendered():
  return export.synthetic_scene(0, 'test', T, H, W, num_points=10, num_context=2)


@pytest.mark.parametrize('hw, size, box', [
    ((540, 960), (576, 576), ((576, 1024), 0, 224)),    # cover: the short side sets the factor
    ((480, 640), (256, 256), ((256, 342), 0, 43)),      # ceil(640 * 256 / 480) = 342
    ((32, 64), (16, 16), ((16, 32), 0, 8)),
    ((64, 48), (32, 48), ((64, 48), 16, 0)),            # no resize, crop rows only
])
def test_crop_box(hw, size, box):
  assert protocol.crop_box(*hw, size) == box


def test_intrinsics_follow_the_pixels():
  """Each pixel holds its own source coordinates (u, v); after crop + 2x area downsampling
  the new intrinsics must map those coordinates onto the pixel that holds them:
  K' K^-1 (u, v, 1) = (j, i, 1)."""
  v, u = np.mgrid[0:32, 0:64].astype(np.float32)
  k = np.array([[40.0, 0, 31.5], [0, 40.0, 15.5], [0, 0, 1]])
  out, k2 = protocol.center_crop_resize(np.stack([u, v], -1)[None], k[None], (16, 16))
  src = np.concatenate([out[0], np.ones((16, 16, 1))], -1) @ (k2[0] @ np.linalg.inv(k)).T
  i, j = np.mgrid[0:16, 0:16]
  np.testing.assert_allclose(src[..., 0], j, atol=1e-5)
  np.testing.assert_allclose(src[..., 1], i, atol=1e-5)


def test_warp_in_the_cropped_frames_matches_the_cropped_render(rendered):
  """48x64 -> 32x32 (factor 2/3, crop 5 columns): frame 0 warped with the cropped GT depth and
  the new intrinsics predicts cropped frame 3. Measured: median error 8 on valid pixels (4 for
  frame 1; 2 at the rendered size: area resampling blurs); focal lengths left unscaled: 38. (A
  wrong crop offset shifts both cameras alike and barely moves this warp: 9; the coordinate test
  above pins it.)"""
  scene, depth = rendered
  case = protocol.nvs_case(scene, (32, 32), depth=depth)
  def median_error(k):
    r = forward_warp(case.rgb[0], case.depth[0], k[0], case.world_to_camera[0],
                     case.world_to_camera[3], dst_intrinsics=k[3])
    assert r.mask.mean() > 0.2
    return np.median(np.abs(r.image.astype(float) - case.rgb[3]).max(-1)[r.mask])
  assert median_error(case.intrinsics) <= 12
  unscaled = case.intrinsics.copy()
  unscaled[:, 0, 0] = unscaled[:, 1, 1] = scene.intrinsics[0, 0, 0]
  assert median_error(unscaled) > 30


@pytest.mark.parametrize('fmt', posed.FORMATS)
def test_exported_synthetic_clip_is_the_synthetic_eval_clip(rendered, tmp_path, fmt):
  """Context (0, T-1): interpolate is the whole clip in order, endpoints given. With context (0,)
  and no target list, nvs is frames 0..T-1 with frame 0 given. At the rendered size the images
  and cameras are the renderer's exactly: the synthetic eval's clips."""
  scene, depth = rendered
  back = posed.read_scene(posed.WRITERS[fmt](scene, str(tmp_path)))
  interp = protocol.interpolate_case(back, (H, W))
  assert interp.scene_ids == tuple(range(T)) and interp.known_frames == (0, T - 1)
  assert interp.scored_frames == tuple(range(1, T - 1))
  np.testing.assert_array_equal(interp.rgb, scene.frames)
  nvs = protocol.nvs_case(dataclasses.replace(back, context_ids=(0,), target_ids=None), (H, W))
  assert nvs.scene_ids == tuple(range(T)) and nvs.scored_frames == tuple(range(1, T))
  assert nvs.known_mask[0].all() and not nvs.known_mask[1:].any()
  clip = protocol.case_clip(nvs)
  np.testing.assert_array_equal(clip['rgb'], scene.frames)
  np.testing.assert_allclose(clip['intrinsics'], scene.intrinsics[0], atol=1e-5)
  np.testing.assert_allclose(clip['world_to_camera'], scene.world_to_camera, atol=1e-5)


def test_split_selects_and_orders_the_views(rendered):
  scene, _ = rendered
  s = dataclasses.replace(scene, context_ids=(6, 1), target_ids=(7, 0, 3, 2, 4, 5))
  nvs = protocol.nvs_case(s, (H, W))
  assert nvs.scene_ids == (6, 0, 2, 3, 4, 5, 7)          # input first, targets in path order
  assert protocol.nvs_case(s, (H, W), num_targets=3).scene_ids == (6, 0, 3, 7)
  interp = protocol.interpolate_case(s, (H, W))
  assert interp.scene_ids == (1, 2, 3, 4, 5, 6)           # endpoints sorted, targets between
  assert protocol.interpolate_case(s, (H, W), num_between=2).scene_ids == (1, 2, 5, 6)
  with pytest.raises(ValueError, match='no target views between context views 2 and 3'):
    protocol.interpolate_case(dataclasses.replace(s, context_ids=(2, 3)), (H, W))


def test_depth_is_cropped_nearest(rendered):
  """Depth takes the same crop with nearest sampling: no value mixes two surfaces."""
  scene, depth = rendered
  case = protocol.nvs_case(scene, (32, 32), depth=depth)
  assert case.depth.shape == (T - 1, 32, 32)      # context (0, 7): 7 is not an nvs target
  assert np.isin(case.depth[0], depth[0]).all()
  ref, _ = protocol.center_crop_resize(depth[:1], scene.intrinsics[:1], (32, 32),
                                       interpolation=cv2.INTER_NEAREST)
  np.testing.assert_array_equal(case.depth[0], ref[0])
