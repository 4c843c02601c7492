"""Posed-scene formats: round trips, every convention flip against a hand-computed projection,
a GT-depth warp between exported frames, and bad inputs that stop with the file and line."""
import json
import os

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation

from maskvid.geometry import camera, forward_warp
from maskvid import posed
from maskvid.posed import colmap, export
from maskvid.posed.scene import PosedFormatError

H, W = 48, 64
FORMATS = posed.FORMATS


@pytest.fixture(scope='module')
def rendered():
  return export.synthetic_scene(0, 'test', 8, H, W, num_points=500)


@pytest.fixture(scope='module')
def exported(rendered, tmp_path_factory):
  scene, _ = rendered
  out = {}
  for fmt in FORMATS:
    d = str(tmp_path_factory.mktemp(fmt))
    posed.WRITERS[fmt](scene, d)
    out[fmt] = d
  return out


@pytest.mark.parametrize('fmt', FORMATS)
def test_round_trip_keeps_cameras_frames_splits_points(rendered, exported, fmt):
  scene, _ = rendered
  back = posed.load_frames(posed.read_scene(exported[fmt]))
  assert back.meta['format'] == fmt
  np.testing.assert_allclose(back.world_to_camera, scene.world_to_camera, atol=1e-5, rtol=0)
  np.testing.assert_allclose(back.intrinsics, scene.intrinsics, atol=1e-5, rtol=0)
  assert back.image_size == (H, W)
  np.testing.assert_array_equal(back.frames, scene.frames)
  assert back.context_ids == (0,) and back.target_ids == tuple(range(1, 8))
  if fmt != 're10k':   # RE10K files carry no points
    np.testing.assert_allclose(back.points3d, scene.points3d, atol=1e-9)
    np.testing.assert_array_equal(back.point_colors, scene.point_colors)
  if fmt == 'colmap':  # tracks
    np.testing.assert_array_equal(back.point_visibility, scene.point_visibility)
    assert 0.2 < scene.point_visibility.mean() < 0.9


def _image(path, h=H, w=W):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(path)


def _pixel(scene, point):
  cam = camera.transform_points(scene.world_to_camera[0], np.asarray(point, np.float64))
  uv, z = camera.project(cam, scene.intrinsics[0])
  return uv, z


# One camera, f = 50 px, file principal point at the image centre (W/2, H/2 in the files'
# corner convention) = ((W-1)/2, (H-1)/2) = (31.5, 23.5) in ours.

def test_nerfstudio_opengl_camera_to_world(tmp_path):
  """Camera at (0, 0, 5), identity OpenGL rotation: it looks down -z with y up, so the world point
  (1, 1, 0) is 5 in front, right of and ABOVE the centre: (31.5 + 50/5, 23.5 - 50/5)."""
  c2w = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 5], [0, 0, 0, 1]]
  meta = dict(w=W, h=H, fl_x=50, fl_y=50, cx=W / 2, cy=H / 2,
              frames=[dict(file_path='images/a.png', transform_matrix=c2w)])
  (tmp_path / 'transforms.json').write_text(json.dumps(meta))
  _image(str(tmp_path / 'images/a.png'))
  uv, z = _pixel(posed.read_scene(str(tmp_path)), (1.0, 1.0, 0.0))
  np.testing.assert_allclose(uv, (41.5, 13.5), atol=1e-9)
  assert z == pytest.approx(5.0)


def test_colmap_quaternion_world_to_camera(tmp_path):
  """w2c = (R_y(90 deg), t = (0, 0, 5)): quaternion (cos 45, 0, sin 45, 0). By hand,
  R_y(90) (0, 1, -1) = (-1, 1, 0), + t = (-1, 1, 5): left of and BELOW the centre (OpenCV y
  down)."""
  q = (float(np.cos(np.pi / 4)), 0.0, float(np.sin(np.pi / 4)), 0.0)
  model = tmp_path / 'sparse' / '0'
  model.mkdir(parents=True)
  (model / 'cameras.txt').write_text(f'# c\n1 PINHOLE {W} {H} 50 50 {W / 2} {H / 2}\n')
  (model / 'images.txt').write_text('1 ' + ' '.join(map(repr, q)) + ' 0 0 5 1 a.png\n\n')
  _image(str(tmp_path / 'images/a.png'))
  scene = posed.read_scene(str(tmp_path))
  uv, z = _pixel(scene, (0.0, 1.0, -1.0))
  np.testing.assert_allclose(uv, (21.5, 33.5), atol=1e-9)
  assert z == pytest.approx(5.0)


def test_quaternions_agree_with_scipy():
  """Our (w, x, y, z) Hamilton conversion against scipy's (x, y, z, w), both directions."""
  rots = Rotation.random(50, random_state=0)
  for r in list(rots) + [Rotation.from_rotvec([np.pi, 0, 0]), Rotation.from_rotvec([0, 0, 3.14])]:
    xyzw = r.as_quat()
    wxyz = np.roll(xyzw, 1)
    np.testing.assert_allclose(colmap.quaternion_to_rotation(wxyz), r.as_matrix(), atol=1e-12)
    np.testing.assert_allclose(colmap.quaternion_to_rotation(
        colmap.rotation_to_quaternion(r.as_matrix())), r.as_matrix(), atol=1e-12)


def _re10k(tmp_path, line, frames=(0,)):
  (tmp_path / 'seq.txt').write_text('https://www.youtube.com/watch?v=x\n' + line)
  for ts in frames:
    _image(str(tmp_path / 'seq' / f'{ts}.png'))
  return str(tmp_path / 'seq.txt')


def test_re10k_normalised_intrinsics_and_world_to_camera(tmp_path):
  """fx = 50/W, fy = 50/H, cx = cy = 0.5 (the centre); w2c = [I | (0, 0, 5)]: (1, 1, 0) -> camera
  (1, 1, 5): right and below, (41.5, 33.5)."""
  line = f'0 {50 / W!r} {50 / H!r} 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 5\n'
  uv, _ = _pixel(posed.read_scene(_re10k(tmp_path, line)), (1.0, 1.0, 0.0))
  np.testing.assert_allclose(uv, (41.5, 33.5), atol=1e-9)


@pytest.mark.parametrize('fmt', FORMATS)
def test_gt_depth_warp_between_exported_frames_matches_renderer(rendered, exported, fmt):
  """Frame 0 warped with its GT depth and the READ-BACK cameras predicts rendered frame 3.

  Measured (48x64, test clip 0): median colour error 2 on valid pixels, 71% of them on the same
  surface (warped depth within 2% of rendered); with the y/z flip dropped: 74 and 0.1%.
  """
  scene, depth = rendered
  back = posed.read_scene(exported[fmt])
  med, same = _warp_agreement(scene.frames, depth, back.intrinsics, back.world_to_camera, 3)
  assert med <= 4 and same >= 0.6
  wrong = np.linalg.inv(np.linalg.inv(back.world_to_camera) @ np.diag([1.0, -1, -1, 1]))
  med, same = _warp_agreement(scene.frames, depth, back.intrinsics, wrong, 3)
  assert med > 30 and same < 0.1


def _warp_agreement(frames, depth, k, w2c, t):
  """(median max-channel colour error, fraction on the same surface) of frame 0 warped into t."""
  r = forward_warp(frames[0], depth[0], k[0], w2c[0], w2c[t], dst_intrinsics=k[t])
  assert r.mask.mean() > 0.1
  err = np.abs(r.image.astype(np.float64) - frames[t]).max(-1)[r.mask]
  same = np.abs(r.depth - depth[t])[r.mask] < 0.02 * depth[t][r.mask]
  return np.median(err), same.mean()


def test_detect_format(exported):
  assert posed.detect_format(exported['nerfstudio'])[0] == 'nerfstudio'
  assert posed.detect_format(os.path.join(exported['re10k'], 'scene.txt'))[0] == 're10k'
  assert posed.detect_format(exported['re10k'])[0] == 're10k'
  assert posed.detect_format(exported['colmap'])[0] == 'colmap'
  assert posed.detect_format(os.path.join(exported['colmap'], 'sparse/0/images.txt'))[0] == 'colmap'
  with pytest.raises(PosedFormatError, match='format not recognised'):
    posed.detect_format(os.path.join(exported['colmap'], 'images'))


def _ns_dir(tmp_path, frames, **extra):
  meta = dict(w=W, h=H, fl_x=50, frames=frames, **extra)
  (tmp_path / 'transforms.json').write_text(json.dumps(meta))
  return str(tmp_path)


_EYE = np.eye(4).tolist()


@pytest.mark.parametrize('case, match', [
    ('missing transforms', r'transforms\.json: file does not exist'),
    ('missing frame', r'transforms\.json: frame 1 image .*b\.png does not exist'),
    ('non-finite pose', r'frames\[0\]\.transform_matrix: non-finite'),
    ('short matrix', r'frames\[0\]\.transform_matrix: must be 4x4 or 3x4'),
    ('split out of range', r'transforms\.json: target_ids \[0, 5\] index outside the 1 frames'),
    ('malformed json', r'transforms\.json:1: malformed JSON'),
])
def test_nerfstudio_bad_inputs_name_file_and_field(tmp_path, case, match):
  _image(str(tmp_path / 'a.png'))
  frame = dict(file_path='a.png', transform_matrix=_EYE)
  if case == 'missing transforms':
    path = str(tmp_path / 'transforms.json')
  elif case == 'missing frame':
    path = _ns_dir(tmp_path, [frame, dict(frame, file_path='b.png')])
  elif case == 'non-finite pose':
    path = _ns_dir(tmp_path, [dict(frame, transform_matrix=[[float('nan')] * 4] * 4)])
  elif case == 'short matrix':
    path = _ns_dir(tmp_path, [dict(frame, transform_matrix=_EYE[:2])])
  elif case == 'split out of range':
    path = _ns_dir(tmp_path, [frame])
    (tmp_path / 'train_test_split_1.json').write_text('{"train_ids": [0], "test_ids": [0, 5]}')
  else:
    (tmp_path / 'transforms.json').write_text('{"frames": [')
    path = str(tmp_path)
  with pytest.raises(PosedFormatError, match=match):
    posed.read_scene(path, 'nerfstudio')


_LINE = '{} 0.8 1.0 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 5\n'


@pytest.mark.parametrize('lines, frames, match', [
    (_LINE.format(0) + '33 0.8 1.0 0.5\n', (0, 33), r'seq\.txt:3: expected 19 fields .*got 4'),
    (_LINE.format(0) + _LINE.format(33), (0,), r'seq\.txt:3: frame 33 has no image'),
    (_LINE.format(0).replace(' 5\n', ' nan\n'), (0,), r'seq\.txt:2: non-finite'),
    (_LINE.format(0).replace('1 0 0 0 0 1', '2 0 0 0 0 1'), (0,),
     r'seq\.txt: frame 0 \(0\): world_to_camera is not a rigid transform'),
])
def test_re10k_bad_inputs_name_file_and_line(tmp_path, lines, frames, match):
  with pytest.raises(PosedFormatError, match=match):
    posed.read_scene(_re10k(tmp_path, lines, frames))


def test_re10k_without_url_line(tmp_path):
  (tmp_path / 'seq.txt').write_text(_LINE.format(0))
  with pytest.raises(PosedFormatError, match=r'seq\.txt:1: expected the video URL'):
    posed.read_scene(str(tmp_path / 'seq.txt'), 're10k')


@pytest.mark.parametrize('images, cameras, match', [
    ('1 1 0 0 0 0 0 5 1\n\n', '1 PINHOLE 64 48 50 50 32 24', r'images\.txt:1: expected IMAGE_ID'),
    ('# x\n1 2 0 0 0 0 0 5 1 a.png\n\n', '1 PINHOLE 64 48 50 50 32 24',
     r'images\.txt:2: quaternion norm 2\.000000 is not 1'),
    ('1 1 0 0 0 0 0 5 7 a.png\n\n', '1 PINHOLE 64 48 50 50 32 24',
     r'images\.txt:1: CAMERA_ID 7 is not in .*cameras\.txt'),
    ('1 1 0 0 0 0 0 5 1 a.png\n\n', '1 PINHOLE 64 48 50 50 32', r'cameras\.txt:1: PINHOLE has 4'),
    ('1 1 0 0 0 0 0 5 1 a.png\n\n', '1 FISHEYE9 64 48 1', r'cameras\.txt:1: expected CAMERA_ID'),
    ('1 1 0 0 0 0 0 5 1 b.png\n\n', '1 PINHOLE 64 48 50 50 32 24', r'images\.txt: frame 0 image'),
])
def test_colmap_bad_inputs_name_file_and_line(tmp_path, images, cameras, match):
  (tmp_path / 'cameras.txt').write_text(cameras + '\n')
  (tmp_path / 'images.txt').write_text(images)
  _image(str(tmp_path / 'images' / 'a.png'))
  with pytest.raises(PosedFormatError, match=match):
    posed.read_scene(str(tmp_path))


def test_frame_of_another_size_stops_loading(tmp_path):
  line = _LINE.format(0) + _LINE.format(33)
  path = _re10k(tmp_path, line, (0,))
  _image(str(tmp_path / 'seq' / '33.png'), h=H + 2)
  scene = posed.read_scene(path)
  with pytest.raises(PosedFormatError, match=r'33\.png: image is 50x64 \(HxW\) but .*seq\.txt '
                                             r'gives 48x64'):
    posed.load_frames(scene)


def test_colmap_distortion_is_read_as_pinhole(tmp_path):
  """OPENCV: fx fy cx cy k1 k2 p1 p2 -> the pinhole part; SIMPLE_RADIAL: f cx cy k."""
  cams = colmap.read_cameras(_write(tmp_path / 'cameras.txt',
                                    '1 OPENCV 64 48 50 51 32 24 0.1 0 0 0\n'
                                    '2 SIMPLE_RADIAL 64 48 40 30 20 0.01\n'))
  np.testing.assert_allclose(cams[1][0], [[50, 0, 31.5], [0, 51, 23.5], [0, 0, 1]])
  np.testing.assert_allclose(cams[2][0], [[40, 0, 29.5], [0, 40, 19.5], [0, 0, 1]])
  assert cams[1][1] == (48, 64)


def _write(path, text):
  path.write_text(text)
  return str(path)
