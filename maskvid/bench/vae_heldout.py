"""How representative is the 32-clip test split? Score a trained VAE on many fresh scenes.

The trainer's eval (`maskvid.vae.evaluate.evaluate`) uses 128 frames of the first 32 clips of each
split: cheap, fixed, and comparable across runs, but 32 scenes carry ~0.35 dB of sampling noise.
This renders the first N clips of the test and train splits (the first 32 test clips are the
trainer's), reconstructs every frame through the posterior mean and prints mean per-clip PSNR
for the first 32, for all N and for 32-clip chunks, so the train/test gap (memorisation) and the
test split's own difficulty can be told apart.

  python -m maskvid.bench.vae_heldout --vae_dir=runs/vae8/vae --clips=256
"""
import argparse
import time

import dm_pix
import numpy as np

from maskvid import workdir
from maskvid.vae import model as vae_model
from maskvid.vae import evaluate as vae_eval
from maskvid import pictures
from maskvid.data import synthetic
from maskvid.data import scenes


def per_clip_psnr(module, params, clips: list[np.ndarray], fn) -> np.ndarray:
  """Mean per-frame PSNR (dB, images in [0, 1]) of each uint8 clip [T,H,W,3] -> [N]."""
  frames = pictures.to_float(np.stack(clips))                      # [N,T,H,W,3]
  n, t = frames.shape[:2]
  flat = frames.reshape(n * t, 1, *frames.shape[2:])
  recon = vae_eval.reconstruct(module, params, flat, fn=fn)
  # The trainer's PSNR (`vae_eval.image_metrics`), kept per frame instead of averaged.
  psnr = dm_pix.psnr((flat[:, 0] + 1.0) / 2.0, (recon[:, 0] + 1.0) / 2.0)
  return np.asarray(psnr).reshape(n, t).mean(axis=1)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--vae_dir', required=True, help='a trained VAE directory (DIR/vae)')
  parser.add_argument('--clips', type=int, default=256, help='scenes per split (multiple of 32)')
  args = parser.parse_args()
  if args.clips < 32 or args.clips % 32:
    parser.error(f'--clips must be a positive multiple of 32, got {args.clips}')
  config = workdir.load_config(args.vae_dir, 'VAE')
  module, params = vae_model.load_vae(args.vae_dir)
  fn = vae_eval.make_reconstruct_fn(module)
  t, res = int(config.data.num_frames), int(config.data.resolution)
  scores = {}
  for split in ('test', 'train'):
    start = time.time()
    clips = [synthetic.render_clip(int(s), split, t, res, res)['rgb']
             for s in scenes.split_seeds(split, args.clips)]
    scores[split] = per_clip_psnr(module, params, clips, fn)
    print(f'{split}: {args.clips} scenes rendered and scored in {time.time() - start:.0f}s')
  print(f"\n{'split':<6} {'first 32':>9} {f'all {args.clips}':>9} {'32-chunk min':>13} "
        f"{'max':>6} {'std of 32-mean':>15}")
  for split, p in scores.items():
    chunks = p.reshape(-1, 32).mean(axis=1)
    print(f'{split:<6} {p[:32].mean():>9.2f} {p.mean():>9.2f} {chunks.min():>13.2f} '
          f'{chunks.max():>6.2f} {p.std() / np.sqrt(32):>15.2f}')
  print(f"\ntrain - test over {args.clips} scenes: "
        f"{scores['train'].mean() - scores['test'].mean():+.2f} dB")


if __name__ == '__main__':
  main()
