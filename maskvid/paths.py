"""Where each stage of a run lives inside a workdir (overridable via config.paths)."""
import os

STAGES = ('data', 'vae', 'latents', 'diffusion', 'eval')


def stage_dir(config, workdir: str, stage: str) -> str:
  """Directory of `stage` for this run: config.paths.<stage> or {workdir}/<stage>."""
  if stage not in STAGES:
    raise ValueError(f'stage must be one of {STAGES}, got {stage!r}')
  override = config.paths.get(stage, '')
  # posixpath.join only concatenates, so a gs://bucket/run workdir stays a valid URI.
  return override if override else os.path.join(workdir, stage)
