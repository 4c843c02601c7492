"""Long videos from a short-clip model: the window plan and the loop over a completer."""
import numpy as np
import pytest

from maskvid.sampling import long_video
from maskvid.tasks import common
import test_tasks


def _check_plan(windows, given, num_frames, window):
  new = [t for w in windows for t in w.new]
  assert sorted(new) == sorted(set(range(num_frames)) - set(given))   # each frame once
  finished = set(given)
  for w in windows:
    assert len(w.frames) <= window and list(w.frames) == sorted(w.frames)
    assert set(w.new) <= set(w.frames)
    assert set(w.frames) - set(w.new) <= finished       # context: finished frames only
    finished |= set(w.new)


def test_anchor_plan_spreads_the_first_window_then_fills_between():
  windows = long_video.plan([0], 32, 8, 'anchors', context=2)
  _check_plan(windows, [0], 32, 8)
  first = windows[0]
  assert first.frames[0] == 0 and 0 not in first.new
  assert first.new[-1] == 31 and len(first.new) == 7          # keyframes reach the far end
  assert np.diff(first.new).max() <= 6
  # Later windows: 6 new frames between their 2 nearest finished frames.
  assert all(len(w.frames) - len(w.new) == 2 for w in windows[1:])
  assert all(min(w.frames) < min(w.new) for w in windows[1:])
  assert len(windows) == 1 + int(np.ceil((31 - 7) / 6))


def test_sliding_plan_continues_from_the_newest_frames():
  windows = long_video.plan([0], 20, 8, 'sliding', context=3)
  _check_plan(windows, [0], 20, 8)
  assert windows[0].frames == tuple(range(8)) and windows[0].new == tuple(range(1, 8))
  assert windows[1].frames == tuple(range(5, 13)) and windows[1].new == tuple(range(8, 13))
  # No context: independent windows.
  alone = long_video.plan([], 16, 8, 'sliding', context=0)
  assert [w.frames for w in alone] == [tuple(range(8)), tuple(range(8, 16))]
  # Interpolation: both ends given; the anchors see both.
  both = long_video.plan([0, 15], 16, 8, 'anchors', context=2)
  _check_plan(both, [0, 15], 16, 8)
  assert {0, 15} <= set(both[0].frames)


@pytest.mark.parametrize('kwargs,match', [
    (dict(strategy='random'), 'strategy'), (dict(window=1), 'window'),
    (dict(context=8), 'context'), (dict(given=[40]), 'given')])
def test_plan_names_bad_arguments(kwargs, match):
  args = dict(given=[0], num_frames=32, window=8, strategy='anchors', context=2)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    long_video.plan(**args)


def test_complete_long_calls_windows_and_keeps_given_pixels():
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
  mask = rng.uniform(size=(20, 32, 32)) < 0.5
  mask[0] = True
  fake = test_tasks.FakeCompleter()
  out = common.run_completion(fake, frames, mask, seed=3, num_steps=2)
  windows = out['windows']
  assert len(fake.calls) == len(windows) > 1
  for j, (call, w) in enumerate(zip(fake.calls, windows)):
    assert call['frames'].shape == (1, len(w.frames), 32, 32, 3) and len(w.frames) <= 8
    assert call['seed'] == 3 + j and call['num_steps'] == 2
    for k, t in enumerate(w.frames):
      if t not in w.new:   # context: a finished frame, every pixel given, the frame as finished
        assert call['pixel_mask'][0, k].all()
        np.testing.assert_array_equal(call['frames'][0, k], out['video'][t])
  assert out['video'].shape == frames.shape
  np.testing.assert_array_equal(out['video'][0], frames[0])      # given frame: never a window's
  assert not np.array_equal(out['video'][~mask], frames[~mask])   # the rest: the windows' output
  assert all(call['guide_frames'] is None for call in fake.calls)
  # Guidance over the context: each window names its context frames (not its new ones).
  fake.calls.clear()
  common.run_completion(fake, frames, mask, seed=3, guide_context=True)
  for call, w in zip(fake.calls, windows):
    np.testing.assert_array_equal(call['guide_frames'], [t not in w.new for t in w.frames])
  # A clip within the model's length is one call, as before.
  fake.calls.clear()
  short = common.run_completion(fake, frames[:8], mask[:8])
  assert len(fake.calls) == 1 and 'latents' in short
