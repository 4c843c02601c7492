"""The methods the eval compares, run on one task's inputs: shared by the table and the sweep.

  with_run_sample(config, workdir) -> (config, notes)        the trained run's completion settings
  make_samplers(config, workdir, methods) -> {method: fn}    the generative methods
  prepare(codec, frames, known_px, hint_px, config) -> Inputs  what every generative method sees
  complete_rows(...) -> {row: float [N, T, H, W, 3]}        one sample, mean of K, one-step, ...

The completion settings are the trained run's `config.sample` (its diffusion/config.json, what
the Completer and the task commands read), with only the keys named in
`config.eval.sample_overrides` changed (`with_run_sample`; the eval job's own config.sample is
not read). All generative methods get their inputs through the Completer's path
(`sampling.inputs`: context fill, encode, token masks, then `finish` composites the decode) and
sample through `sampling.objectives.complete` with their run's objective, the Completer's one
entry: the `ours` row is what a user's command runs.
"""
from __future__ import annotations

import copy
import functools

import jax
import jax.numpy as jnp
import numpy as np

from maskvid import fileio
from maskvid import workdir as workdir_lib
from maskvid.model import model as model_lib
from maskvid.sampling import objectives
from maskvid.sampling import inputs as inputs_lib
from maskvid.sampling import noise
from maskvid.sampling import options
from maskvid.workdir import baseline_dir
from maskvid.workdir import stage_dir

TRIVIAL = ('nearest_fill', 'cross_fade', 'temporal_nearest', 'no_propagation', 'colour_transfer',
           'flow_warp')
GENERATIVE = ('conditioning', 'replacement', 'ours_no_sc', 'ours')
MEAN_SUFFIX, ONE_STEP_SUFFIX = ' mean{k}', ' one-step'
# protocol.Task.variants: one sample per generative method on each.
VARIANTS = {'edit': ('blank', 'gt-region')}


def _model(diffusion_dir: str):
  """(apply_fn, params, objective) of a trained run: its EMA weights and the objective it was
  trained with (which picks its sampler, `sampling.objectives.complete`)."""
  config, module, params = model_lib.load_for_inference(diffusion_dir)
  return (model_lib.make_apply_fn(module), params,
          str(config.diffusion.get('objective', 'masked')))


def _trained_baseline(workdir: str, name: str) -> str:
  d = baseline_dir(workdir, name)
  if not (fileio.path(d) / 'checkpoints').is_dir():
    raise FileNotFoundError(f'config.eval.methods names {name!r} but {d!r} holds no trained run: '
                            'train it first (`--config.job=baselines`, or `--config.job=eval`, '
                            'which trains the missing baselines)')
  return d


def with_run_sample(config, workdir: str) -> tuple:
  """(config copy whose `sample` is the trained run's, with eval.sample_overrides applied; notes).

  The trained run is the workdir's diffusion stage: its config.sample is what its commands
  sample with. Without one (an eval of the trivial rows alone, stand-in models) this config's
  own `sample` takes its place, and a note says so; an eval config's `sample` that differs
  from the run's is named in a note, since only `eval.sample_overrides` changes the run's.
  """
  overrides = config.eval.get('sample_overrides', {})
  run_dir = stage_dir(config, workdir, 'diffusion')
  notes = []
  try:
    run_sample = workdir_lib.load_config(run_dir, 'diffusion').sample
  except FileNotFoundError:
    run_sample = config.sample
    notes.append(f'sampler settings from this config\'s `sample`: no trained run in {run_dir}.')
  else:
    ignored = {k: config.sample.get(k) for k in options.COMPLETION_KEYS
               if k in run_sample and config.sample.get(k) != run_sample.get(k)}
    if ignored:
      notes.append(f'sampler settings are the trained run\'s ({run_dir}/config.json); this '
                   f'config\'s sample {ignored} is not used (config.eval.sample_overrides is).')
  out = copy.deepcopy(config)
  with out.unlocked():
    out.sample = options.with_overrides(run_sample, overrides)
  return out, notes


def make_samplers(config, workdir: str, methods) -> dict:
  """method -> fn(known, known_mask, exact_mask, rng, num_steps) -> latents [B,T,h,w,c].

  known [B,T,h,w,c]; known_mask / exact_mask bool [B,T,h,w] (`masks.pixel_to_token_masks`).
  `ours` samples with the trained run's config.sample (`with_run_sample`: the commands'
  defaults), `ours_no_sc` the same with stochastic conditioning off. Only the masked model
  distinguishes exact from unreliable tokens; the baselines take every known token as given.
  """
  out = {}
  if 'ours' in methods or 'ours_no_sc' in methods:
    apply_fn, params, objective = _model(stage_dir(config, workdir, 'diffusion'))
    sample = with_run_sample(config, workdir)[0].sample

    def ours(known, mask, exact, rng, steps, sc):
      opts = options.sampler_options(sample, num_steps=steps)
      if not sc or steps == 1:
        opts['renoise_at'] = 0.0
      if steps == 1:   # the one-step estimate: what the conditional model alone predicts
        opts.update(solver='euler', guidance=1.0)
      return objectives.complete(objective, apply_fn, params, known, mask, rng, exact_mask=exact,
                                **opts)
    out['ours_no_sc'] = lambda k, m, e, r, n: ours(k, m, e, r, n, False)
    out['ours'] = lambda k, m, e, r, n: ours(k, m, e, r, n, True)
  for name in ('conditioning', 'replacement'):
    if name in methods:
      out[name] = functools.partial(_baseline_row, *_model(_trained_baseline(workdir, name)))
  return {m: out[m] for m in methods if m in out}


def _baseline_row(apply_fn, params, objective, known, mask, exact, rng, steps):
  del exact   # a baseline takes every known token as given
  return objectives.complete(objective, apply_fn, params, known, mask, rng, num_steps=steps)


def same_as_no_sc(config) -> bool:
  """True when `ours` and `ours_no_sc` are the same sampler call (no stochastic conditioning)."""
  return float(config.sample.renoise_at) <= 0.0


def generative_rows(methods, num_samples: int, one_step: bool, tasks=()) -> list:
  """Table rows of the generative methods: one sample (the headline, named after the method),
  then the mean of `num_samples` samples and the one-step estimate x1 - v(x1, 1) when asked
  (the conditional prediction, without guidance),
  then one sample on each input variant of `tasks` (VARIANTS)."""
  rows = []
  for m in methods:
    rows.append(m)
    if num_samples > 1:
      rows.append(m + MEAN_SUFFIX.format(k=num_samples))
    if one_step:
      rows.append(m + ONE_STEP_SUFFIX)
    rows += [f'{m} {v}' for t in tasks for v in VARIANTS.get(t, ())]
  return rows


def batched(fn, arrays, batch_size):
  """fn over the leading axis of `arrays` in chunks of batch_size; numpy results concatenated."""
  outs = []
  n = len(arrays[0])
  for s in range(0, n, batch_size):
    outs.append(np.asarray(fn(*[a[s:s + batch_size] for a in arrays])))
  return np.concatenate(outs)


def prepare(codec, frames, known_px, hint_px, config, batch_size: int) -> inputs_lib.Inputs:
  """What every generative method is given: `sampling.inputs.prepare`, the Completer's path,
  with config.sample's options and the codec called in batches."""
  return inputs_lib.prepare(
      frames, known_px, hint_px, encode=lambda x: batched(codec.encode, [x], batch_size),
      decode=lambda z: batched(codec.decode, [z], batch_size), factor=codec.factor,
      patch_size=tuple(int(p) for p in config.model.patch_size),
      fill_options=options.fill_options(config.sample),
      token_rule=options.token_rule(config.sample))


def complete_rows(fn, name: str, inputs: dict, codec, *, seed: int, steps: int,
                  num_samples: int, one_step: bool, batch_size: int, variants=()) -> dict:
  """Rows of generative method `name` (sampler `fn`): {row: float [N, T, H, W, 3]}.

  inputs: {'': Inputs, variant: Inputs}. Clip i's sample 0 draws from jax.random.key(seed + i),
  what the Completer and the task commands use for that clip with `seed=seed + i`
  (`sampling.noise.clip_keys`: one key per clip, so batching changes nothing); sample k > 0 from
  fold_in(key(seed + i), k). Every method gets the same keys, so methods are compared on the
  same noise.
  """
  def keys(first: int, count: int, sample: int):
    k = noise.clip_keys(int(seed) + first, count)
    return k if sample == 0 else jax.vmap(lambda c: jax.random.fold_in(c, sample))(k)

  def run(n, sample, variant=''):
    def draw(known_latents, known, exact):   # clip i keeps its key whatever the batching
      return batched(lambda k, mk, ex, i: fn(jnp.asarray(k), jnp.asarray(mk), jnp.asarray(ex),
                                             keys(int(i[0]), len(i), sample), n),
                     [known_latents, known, exact, np.arange(len(known))], batch_size)

    def decode(latents):
      return batched(codec.decode, [latents], batch_size)

    return inputs_lib.complete(inputs[variant], draw, decode)[1]

  samples = [run(steps, k) for k in range(num_samples)]
  preds = {name: samples[0]}
  if num_samples > 1:
    preds[name + MEAN_SUFFIX.format(k=num_samples)] = np.mean(samples, axis=0)
  if one_step:
    preds[name + ONE_STEP_SUFFIX] = run(1, 0)
  for v in variants:
    preds[f'{name} {v}'] = run(steps, 0, v)
  return preds
