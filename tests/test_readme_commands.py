"""The README's commands, as a user types them.

Every command in a ```bash block of README.md is either run here or skipped for a stated reason
(a new command fails `test_every_readme_command_is_run_or_skipped_for_a_reason` until it is
classified). Run means: the line as written, in a directory laid out like the README assumes
(`/path/to/mp4s` is a folder of tiny videos written here), with only step and clip counts lowered
by appended `--config.*` overrides (a later flag wins), and it must exit 0.
"""
import os
import re
import shlex
import subprocess
import sys

import imageio.v2 as imageio
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Command prefix -> why this suite does not run it.
SKIPPED = {
    'make demo': 'the contract itself: 16 minutes; its pipeline is the own-videos command run '
                 'below on the synthetic source, and its tables are docs/reference_run.md',
    'make test': 'the suite this test belongs to',
    'make test-fast': 'the unit tier of this suite',
    'tensorboard': 'a viewer, not part of maskvid',
    'python -m maskvid.bench.vae': 'five VAE variants, five compiles (~2 min); its step is the '
                                   "VAE stage's, run by the VAE tests",
    'python -m maskvid.bench.layouts': 'nine mesh x remat compiles; the layouts run in '
                                       'tests/test_train_sharded.py',
    'python -m maskvid.bench.ladder': 'trains the reference model three times (hours)',
    'python -m maskvid.bench.vae_heldout': 'needs a trained VAE (DIR/vae) and 256 fresh scenes',
    'python -m maskvid.bench.long_video': 'needs the trained demo run (runs/demo)',
    'bash maskvid/bench/gpu_check.sh': 'needs an NVIDIA GPU',
    '.venv/bin/pip install': 'installs accelerator wheels (no network in tests)',
    '.venv/bin/python -m maskvid.aot': 'compiles the 457M model for a pod (~3.5 min a '
                                       'topology); tests/test_aot.py runs the job on tiny configs',
}
# The task commands run verbatim in tests/test_tasks_e2e.py on a random-weights workdir; the
# interpolate line of the own-videos block runs here on the model that block trained.
TASKS_ELSEWHERE = 'python -m maskvid.tasks.'

# Benchmarks run here, with their step / clip / repeat counts lowered (appended flags).
BENCH_LOWERED = {
    'python -m maskvid.bench.data': ('--num_clips=4', '--frames=4', '--loader_batches=2',
                                     '--videos=1'),
    'python -m maskvid.bench.train_step': ('--steps=1', '--warmup=0'),
    'python -m maskvid.bench.sampler': ('--steps=2', '--repeats=1'),
}

# Appended to `python -m maskvid.main` lines: step and clip counts only.
LOWERED = ('--config.vae.train.steps=2', '--config.train.steps=2', '--config.train.log_every=1',
           '--config.eval.num_clips=1', '--config.eval.num_samples=1',
           '--config.sample.preview_clips=1', '--config.eval.speed_clips=1')


def readme_commands() -> list[tuple[str, str]]:
  """(section heading, command) for every command of every ```bash block, continuation lines
  joined and comments dropped."""
  with open(os.path.join(ROOT, 'README.md')) as f:
    text = f.read()
  out = []
  for match in re.finditer(r'^```bash\n(.*?)^```', text, re.M | re.S):
    heading = re.findall(r'^#+ (.*)$', text[:match.start()], re.M)[-1]
    joined = re.sub(r'\\\n\s*', ' ', match.group(1))
    for line in joined.splitlines():
      command = line.split(' #')[0].strip()
      if command and not command.startswith('#'):
        out.append((heading, command))
  return out


def _skip_reason(command: str) -> str | None:
  for prefix, reason in SKIPPED.items():
    if command.startswith(prefix):
      return reason
  return None


def _bench_flags(command: str):
  for prefix, flags in BENCH_LOWERED.items():
    if command == prefix or command.startswith(prefix + ' '):
      return flags
  return None


def test_every_readme_command_is_run_or_skipped_for_a_reason():
  commands = readme_commands()
  assert len(commands) >= 15
  unclassified = [c for _, c in commands
                  if _skip_reason(c) is None and not c.startswith(TASKS_ELSEWHERE)
                  and not c.startswith('python -m maskvid.main') and _bench_flags(c) is None]
  assert not unclassified, unclassified
  own = [c for h, c in commands if h == 'Train on your own videos']
  assert own[0].startswith('python -m maskvid.main') and '/path/to/mp4s' in own[0]


def _write_videos(folder: str, count: int) -> None:
  """Moving stripes under a drifting square: 16 frames of 32x32 per video."""
  os.makedirs(folder, exist_ok=True)
  yy, xx = np.mgrid[0:32, 0:32]
  for v in range(count):
    colour = np.array([60 + 40 * v, 200 - 30 * v, 120])
    frames = []
    for t in range(16):
      img = ((((xx + 2 * t + 3 * v) // 4) % 2)[..., None] * colour).astype(np.uint8)
      img[8 + t // 2:16 + t // 2, 4 + v:12 + v] = 255 - colour
      frames.append(img)
    imageio.mimwrite(os.path.join(folder, f'clip{v}.mp4'), frames, fps=8, macro_block_size=16)


def _checkout_like(tmp_path) -> str:
  """A directory laid out like the checkout the README's commands run in: `configs/` (linked)
  beside the `runs/` they write, so a test never writes into the real checkout."""
  os.symlink(os.path.join(ROOT, 'configs'), tmp_path / 'configs')
  return str(tmp_path)


def _run(command: str, cwd: str, extra=()) -> subprocess.CompletedProcess:
  args = shlex.split(command)
  assert args[:2] == ['python', '-m'], command
  env = dict(os.environ, PYTHONPATH=ROOT)   # this checkout first, whatever is installed
  proc = subprocess.run([sys.executable] + args[1:] + list(extra), cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, f'{command}\n{proc.stderr[-4000:]}'
  return proc


@pytest.mark.slow
def test_train_on_your_own_videos_runs_as_written(tmp_path):
  """The README's own-videos block: train every stage of the demo recipe on a folder of videos
  and evaluate on held-out ones, then interpolate between two images with the trained run."""
  videos = tmp_path / 'videos'
  _write_videos(str(videos), 6)
  own = [c for h, c in readme_commands() if h == 'Train on your own videos']
  train = own[0].replace('/path/to/mp4s', str(videos))
  _run(train, _checkout_like(tmp_path), LOWERED)
  run = tmp_path / 'runs' / 'mine'
  results = (run / 'eval' / 'results.md').read_text()
  assert 'holes' in results and 'interpolate' in results
  assert any('speed sweep skipped' in line for line in results.splitlines())

  interpolate = [c for c in own if c.startswith('python -m maskvid.tasks.interpolate')][0]
  frame = imageio.mimread(str(videos / 'clip0.mp4'))
  imageio.imwrite(str(tmp_path / 'a.png'), frame[0])
  imageio.imwrite(str(tmp_path / 'b.png'), frame[6])
  _run(interpolate, str(tmp_path), ('--num_steps=1',))
  video = imageio.mimread(str(tmp_path / 'mid.mp4'))
  assert len(video) >= 3 and video[0].shape == (32, 32, 3)


@pytest.mark.slow
def test_the_cheap_benchmarks_run_as_written(tmp_path):
  """The README's data, train-step and sampler benchmark lines, counts lowered: each prints its
  table."""
  cwd = _checkout_like(tmp_path)
  ran = []
  for _, command in readme_commands():
    flags = _bench_flags(command)
    if flags is not None:
      out = _run(command, cwd, flags).stdout
      assert len(out.splitlines()) >= 3, (command, out)
      ran.append(command.split()[2])
  assert ran == ['maskvid.bench.data', 'maskvid.bench.train_step', 'maskvid.bench.sampler']
