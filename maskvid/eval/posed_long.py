"""The posed eval's long paths (config.eval.posed_long_paths; docs/posed.md, 'Cases').

With posed_long_paths the nvs case keeps every target of the scene's path; a case longer than
the model's clip (T frames) runs as the nvs command runs a long path
(`tasks.nvs.novel_view_synthesis` -> `sampling.long_video.complete_long`):
  * the windows are `long_video.plan` with the case's given frames (nvs: the input view),
    window T, strategy 'sliding' (the nvs command's default for long paths) and 2 context
    frames (the commands' --context_frames default);
  * each generative row (`ours`, `ours_no_sc`, a trained baseline) completes window by window on
    the eval's inputs (`methods.prepare` -> `methods.complete_rows`, the short case's path): a
    window's new frames, once completed, are given pixels of the later windows that hold them;
    clip i's window j draws from key(config.seed + i + j), what the command does for that clip
    with seed=config.seed + i;
  * the trivial and reference rows answer the whole clip at once (`eval.run.run_task`: they have
    no length limit), and every target frame is scored.
The sampler compiles once (every window has T frames). One sample per generative method: the
'<m> mean<K>' and '<m> one-step' rows are not computed on a long path (NaN in the table).
"""
from __future__ import annotations

from absl import logging
import numpy as np

from maskvid.eval import methods as methods_lib
from maskvid.eval import run as run_lib
from maskvid.sampling import long_video

STRATEGY = 'sliding'   # tasks.nvs: long paths go in time order (docs/sampling.md)
CONTEXT = 2            # tasks.cli --context_frames


def windows(num_frames: int, clip_length: int, given=(0,)) -> list:
  """[long_video.Window] that complete a case of num_frames clip positions, `given` known."""
  return long_video.plan(given, num_frames, clip_length, STRATEGY, CONTEXT)


def note(clip_length: int) -> str:
  return (f'nvs: every target of each scene\'s path (eval.posed_long_paths); a path longer '
          f'than the clip ({clip_length} frames) is completed window by window '
          f'(`sampling.long_video.plan`, {STRATEGY}, {CONTEXT} context frames; clip i\'s window '
          'j from key(seed + i + j)); the trivial and reference rows answer it whole; '
          'its mean / one-step rows are not computed.')


def complete_windows(config, fn, name: str, known_frames, known_px, hint_px, plan, codec):
  """One sample of generative method `name` (sampler `fn`) on a batch of long clips, window by
  window: float [N, T, H, W, 3]. known_frames float [N, T, H, W, 3], known_px / hint_px bool
  [N, T, H, W] (the tasks' inputs); plan: `windows(...)`."""
  bs = max(1, int(config.eval.batch_size))
  video = np.array(known_frames, np.float32)
  known, hint = np.array(known_px, bool), np.array(hint_px, bool) & ~np.asarray(known_px, bool)
  for j, w in enumerate(plan):
    idx = list(w.frames)
    logging.info('eval_posed %s: window %d/%d, frames %s (new %s)', name, j + 1, len(plan), idx,
                 list(w.new))
    inputs = methods_lib.prepare(codec, video[:, idx], known[:, idx], hint[:, idx], config, bs)
    out = methods_lib.complete_rows(fn, name, {'': inputs}, codec, seed=int(config.seed) + j,
                                    steps=int(config.sample.num_steps), num_samples=1,
                                    one_step=False, batch_size=bs)[name]
    new = [k for k, t in enumerate(idx) if t in w.new]
    done = [idx[k] for k in new]
    video[:, done] = out[:, new]
    known[:, done], hint[:, done] = True, False   # finished: given to the later windows
  return video


def run_long(config, task: str, clips: list, given, codec, samplers, rows) -> tuple:
  """`eval.run.run_task` for clips longer than the model's: (preds {row: [N, T, H, W, 3]}, tasks,
  inputs). The trivial and reference rows from run_task on the whole clips, the generative rows
  window by window (`complete_windows`)."""
  preds, task_list, inputs = run_lib.run_task(config, task, clips, codec, {}, rows,
                                              seed=int(config.seed))
  plan = windows(len(clips[0]['rgb']), int(config.data.clip_length), given)
  frames, known_px, hint_px = (np.stack([getattr(t, a) for t in task_list])
                               for a in ('known_frames', 'known_pixels', 'hints'))
  for m, fn in samplers.items():
    if m not in rows:
      continue
    if m == 'ours' and 'ours_no_sc' in preds and methods_lib.same_as_no_sc(config):
      preds[m] = preds['ours_no_sc']
      continue
    preds[m] = complete_windows(config, fn, m, frames, known_px, hint_px, plan, codec)
  return preds, task_list, inputs
