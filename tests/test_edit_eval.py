"""The 'edit' eval task: ground-truth edit pairs from the renderer, and what each method is given."""
import numpy as np
import pytest

from maskvid import pictures
from maskvid.data import edits
from maskvid.data import synthetic
from maskvid.data import scenes
from maskvid.eval import protocol
from maskvid.tasks import track


# test clip 1: a dolly shot, where optical flow tracks the object well at 32x32 (IoU ~0.8).
SEED = int(scenes.split_seeds('test', 2)[1])


@pytest.fixture(scope='module')
def pair():
  return edits.render_edit_pair(SEED, 'test', 6, 32, 32)


def test_edit_pair_differs_only_on_the_edited_object(pair):
  original = synthetic.render_clip(SEED, 'test', 6, 32, 32)
  np.testing.assert_array_equal(pair['rgb'], original['rgb'])      # the first render is the clip
  changed = (pair['rgb'] != pair['rgb_edited']).any(-1)
  obj = pair['object_mask']
  assert obj.shape == (6, 32, 32) and obj.dtype == bool
  assert not changed[~obj].any()                  # nothing outside the object's pixels changes
  assert changed[obj].mean() > 0.9                # and (nearly) all of the object does
  assert obj[0].mean() >= 0.02                    # the edited object is visible in frame 0
  # The largest object in frame 0 was chosen.
  scene = scenes.sample_scene(SEED, 'test', 6)
  ids = synthetic.render_scene(scene, 32, 32)['object_id'][0]
  areas = [(ids == i).sum() for i in range(len(scene['objects']))]
  assert pair['edited_object'] == int(np.argmax(areas))
  np.testing.assert_array_equal(ids == pair['edited_object'], obj[0])


def test_edit_pairs_are_deterministic_and_skip_clips_without_an_object():
  a = edits.edit_pairs('ood', 2, 4, 16, 16)
  b = edits.edit_pairs('ood', 2, 4, 16, 16)
  assert [p['seed'] for p in a] == [p['seed'] for p in b]
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['rgb_edited'], y['rgb_edited'])
  assert edits.render_edit_pair(int(a[0]['seed']), 'ood', 4, 16, 16, min_fraction=0.99) is None
  with pytest.raises(ValueError, match='show an object'):
    edits.edit_pairs('test', 2, 4, 16, 16, min_fraction=0.99, max_seeds=3)


def test_edit_task_inputs_answers_and_scored_pixels(pair):
  task = protocol.edit_task(pair, dilate_radius=1)
  edited = pictures.to_float(pair['rgb_edited'])
  original = pictures.to_float(pair['rgb'])
  obj = pair['object_mask']
  np.testing.assert_array_equal(task.target, edited)
  assert task.frames == tuple(range(1, 6))
  np.testing.assert_array_equal(task.hole[1:], obj[1:])
  assert not task.hole[0].any()
  # Frame 0 is the edited frame, wholly known; later frames are known outside the tracked region,
  # with the original's values there.
  assert task.known_pixels[0].all()
  np.testing.assert_array_equal(task.known_frames[0], edited[0])
  k = task.known_pixels[1:]
  np.testing.assert_array_equal(task.known_frames[1:][k], original[1:][k])
  assert 0.3 < k.mean() < 1.0
  # The tracked region mostly covers the object (the unknown pixels are where it is).
  assert task.info['region_iou'] > 0.5
  assert (~task.known_pixels[1:])[obj[1:]].mean() > 0.7
  # Inside the region the edited frame 0, pulled along the tracked flow, is a hint: a guess of
  # the edited object, never counted as given. It is mostly right (closer to the edited render
  # than the original is) and is the 'flow_warp' answer on its own.
  hint = task.hints
  assert not (hint & task.known_pixels).any() and not hint[0].any()
  assert hint[1:][obj[1:]].mean() > 0.5
  on = hint & obj
  err_hint = np.abs(task.known_frames[on] - edited[on]).mean()
  assert err_hint < 0.5 * np.abs(original[on] - edited[on]).mean()
  warp = task.answers['flow_warp']
  np.testing.assert_array_equal(warp[hint], task.known_frames[hint])
  np.testing.assert_array_equal(warp[1:][~hint[1:]], original[1:][~hint[1:]])
  # The GT-region variant hides exactly the (dilated) object, with its own hint.
  gt_known, gt_frames, gt_hint = task.variants['gt-region']
  assert not gt_known[1:][obj[1:]].any() and gt_known[0].all()
  assert not (gt_hint & gt_known).any() and gt_hint[1:][obj[1:]].mean() > 0.5
  np.testing.assert_array_equal(gt_frames[0], edited[0])
  # Answers: the unedited frames (with the edited frame 0), and the colour transfer.
  nop = task.answers['no_propagation']
  np.testing.assert_array_equal(nop[1:], original[1:])
  np.testing.assert_array_equal(nop[0], edited[0])
  assert task.trivial is nop


def test_colour_transfer_carries_a_per_channel_change():
  rng = np.random.default_rng(0)
  original = rng.uniform(-0.5, 0.5, (3, 8, 8, 3)).astype(np.float32)
  region = np.zeros((3, 8, 8), bool)
  region[:, 2:6, 2:6] = True
  edited0 = original[0].copy()
  edited0[region[0]] = edited0[region[0]] * [0.5, 1.0, 2.0] + [0.1, -0.2, 0.0]
  out = protocol.colour_transfer(original, edited0, region)
  np.testing.assert_array_equal(out[0], edited0)
  expect = np.clip(original * [0.5, 1.0, 2.0] + [0.1, -0.2, 0.0], -1, 1)
  np.testing.assert_allclose(out[1:][region[1:]], expect[1:][region[1:]], atol=1e-5)
  np.testing.assert_array_equal(out[1:][~region[1:]], original[1:][~region[1:]])


def test_edit_task_rejects_a_clip_without_the_edit():
  clip = synthetic.render_clip(int(scenes.split_seeds('test', 1)[0]), 'test', 4, 16, 16)
  with pytest.raises(ValueError, match='rgb_edited'):
    protocol.make_task('edit', clip)
  clip['rgb_edited'], clip['object_mask'] = clip['rgb'], np.zeros((4, 8, 8), bool)
  with pytest.raises(ValueError, match='object_mask'):
    protocol.make_task('edit', clip)


def test_edit_conditioning_lives_with_the_tracker():
  frames = np.zeros((3, 8, 8, 3), np.uint8)
  region = np.zeros((3, 8, 8), bool)
  region[:, 3, 3] = True
  cond, known, hint = track.edit_conditioning(frames, np.full((8, 8, 3), 9, np.uint8), region,
                                              dilate_radius=1)
  assert known[0].all() and (cond[0] == 9).all()
  assert not known[1:, 2:5, 3].any() and not known[1:, 3, 2:5].any() and known[1:, 0, 0].all()
  assert not hint.any() and (cond[~known] == 0).all()
  # With flows (a still video: zero flow) the edit is pulled into the unknown region as a hint.
  cond, known2, hint = track.edit_conditioning(
      frames, np.full((8, 8, 3), 9, np.uint8), region, dilate_radius=1,
      flows=track.consecutive_flows(frames))
  np.testing.assert_array_equal(known2, known)
  np.testing.assert_array_equal(hint, ~known)
  assert (cond[1:][hint[1:]] == 9).all()
