"""In-memory procedural clips for tests and benchmarks (no disk, no renderer needed)."""
import numpy as np


class ProceduralClips:
  """Random-access source of `{'rgb': uint8 [T,H,W,3]}`: a colour gradient with moving discs.

  Same record layout as `maskvid.data.storage.ClipSource` (rgb only), deterministic per index.
  """

  def __init__(self, num_clips: int, num_frames: int = 4, size: int = 16, seed: int = 0):
    if num_clips < 1 or num_frames < 1 or size < 4:
      raise ValueError(f'need num_clips >= 1, num_frames >= 1, size >= 4; got '
                       f'{num_clips}, {num_frames}, {size}')
    self.num_clips, self.num_frames, self.size, self.seed = num_clips, num_frames, size, seed

  def __len__(self) -> int:
    return self.num_clips

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < self.num_clips:
      raise IndexError(index)
    rng = np.random.default_rng([self.seed, index])
    s, t = self.size, self.num_frames
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / (s - 1)
    c0, c1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    bg = c0 + (c1 - c0) * (0.5 * (xx + yy))[..., None]
    frames = []
    discs = [(rng.uniform(0.2, 0.8, 2), rng.uniform(-0.1, 0.1, 2), rng.uniform(0.1, 0.3),
              rng.uniform(0, 1, 3)) for _ in range(2)]
    for k in range(t):
      img = bg.copy()
      for centre, vel, radius, colour in discs:
        cy, cx = centre + k * vel
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2
        img[inside] = colour
      frames.append(img)
    return {'rgb': (np.stack(frames) * 255).round().clip(0, 255).astype(np.uint8)}


def tiny_config(steps: int = 4):
  """A full config with a VAE small enough for unit tests on 16x16 frames (2x down)."""
  from configs import default  # pylint: disable=g-import-not-at-top
  c = default.get_config()
  c.data.resolution = 16
  c.vae.latent_channels = 4
  c.vae.base_channels = 8
  c.vae.channel_multipliers = (1, 2)
  c.vae.norm_groups = 4
  c.vae.train.steps = steps
  c.vae.train.batch_size = 4
  c.vae.train.learning_rate = 3e-3
  c.vae.train.warmup_steps = 2
  c.vae.train.log_every = 2
  c.vae.train.checkpoint_every = 2
  c.vae.train.keep_checkpoints = 5
  c.vae.train.eval_frames = 8
  return c
