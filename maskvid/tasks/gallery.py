"""The README's gallery: one strip per task from a trained run, on held-out synthetic clips.

  python -m maskvid.tasks.gallery --checkpoint=runs/demo --out_dir=docs/img

Writes gallery_{nvs,interpolate,edit}.png (+ .mp4) into --out_dir through the task commands
themselves: nvs from frame 0 of a `test` clip with its ground-truth depth along an orbit;
interpolate between frames 0 and 7 of a test clip; edit of a test clip whose frame 0 has a
magenta square painted on it. Each strip's rows are the command's own (inputs, known mask or
blend, output).
"""
import os
import tempfile

from absl import app
from absl import flags
import imageio.v3 as iio
import numpy as np

from maskvid.data import synthetic

from maskvid.data import scenes
from maskvid.tasks import cli
from maskvid.tasks import common
from maskvid.tasks import edit
from maskvid.tasks import interpolate
from maskvid.tasks import nvs

TEST_SEED_INDEX = 3   # which held-out clip (a fixed, typical one)


def make_gallery(checkpoint: str, out_dir: str, *, completer=None, seed: int = 0,
                 **sample_kwargs) -> dict:
  """Runs the three commands; returns {task: png path}."""
  os.makedirs(out_dir, exist_ok=True)
  if completer is None:
    completer = cli.load_completer(checkpoint)
  size = common.model_resolution(completer)
  clip_seed = int(scenes.split_seeds('test', TEST_SEED_INDEX + 1)[-1])
  clip = synthetic.render_clip(clip_seed, 'test', 8, *size)['rgb']
  out = {}
  with tempfile.TemporaryDirectory() as tmp:
    _, out['nvs'] = nvs.command(image=f'synthetic:test:{clip_seed}', trajectory='orbit',
                                checkpoint=checkpoint, out=os.path.join(out_dir, 'gallery_nvs.mp4'),
                                depth='gt', num_frames=8, seed=seed, completer=completer,
                                **sample_kwargs)
    a, b = os.path.join(tmp, 'a.png'), os.path.join(tmp, 'b.png')
    iio.imwrite(a, clip[0])
    iio.imwrite(b, clip[-1])
    _, out['interpolate'] = interpolate.command(
        start=a, end=b, checkpoint=checkpoint, out=os.path.join(out_dir, 'gallery_interpolate.mp4'),
        num_frames=8, seed=seed, completer=completer, **sample_kwargs)
    video, edited = os.path.join(tmp, 'clip.npy'), os.path.join(tmp, 'edit0.png')
    np.save(video, clip)
    frame0 = clip[0].copy()
    h, w = frame0.shape[:2]
    frame0[h // 4:h // 2, w // 4:w // 2] = (255, 0, 255)
    iio.imwrite(edited, frame0)
    _, out['edit'] = edit.command(video=video, edited_frame=edited, checkpoint=checkpoint,
                                  out=os.path.join(out_dir, 'gallery_edit.mp4'), seed=seed,
                                  completer=completer, **sample_kwargs)
  return out


def main(argv):
  f = flags.FLAGS
  cli.run_main(argv, lambda: tuple(make_gallery(f.checkpoint, f.out_dir, seed=f.seed,
                                                **cli.sample_options(f)).values()))


if __name__ == '__main__':
  flags.DEFINE_string('out_dir', 'docs/img', 'Where the strips (and MP4s) go.')
  cli.define_common_flags()
  flags.FLAGS.set_default('out', 'unused.mp4')   # the common --out flag: each task names its own
  app.run(main)
