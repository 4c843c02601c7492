"""`eval.methods.make_samplers`: the options each generative row samples with."""
import pytest

from configs import default
from maskvid.eval import methods
from maskvid.sampling import sampler


def test_ours_uses_config_sample_and_the_one_step_row_is_the_plain_conditional(monkeypatch):
  calls = []
  monkeypatch.setattr(methods, '_model', lambda d: ('apply', 'params', 'masked'))
  monkeypatch.setattr(sampler, 'complete', lambda *a, **kw: calls.append(kw) or 'latents')
  c = default.get_config()
  c.sample.num_steps, c.sample.solver, c.sample.guidance, c.sample.renoise_at = 12, 'heun', 2.0, 0.3
  fns = methods.make_samplers(c, '/unused', ('ours', 'ours_no_sc'))
  assert fns['ours']('k', 'm', 'e', 'r', 12) == 'latents'
  fns['ours_no_sc']('k', 'm', 'e', 'r', 12)
  fns['ours']('k', 'm', 'e', 'r', 1)
  want = dict(num_steps=12, solver='heun', renoise_at=0.3, guidance=2.0)
  assert {k: calls[0][k] for k in want} == want
  assert {k: calls[1][k] for k in want} == {**want, 'renoise_at': 0.0}
  # One step from pure noise: x1 - v_c(x1, 1), the conditional model's estimate; guidance would
  # extrapolate it (measured: 18.8 dB -> 16.3 with w = 2 on slow interpolation).
  assert {k: calls[2][k] for k in want} == dict(num_steps=1, solver='euler', renoise_at=0.0,
                                                guidance=1.0)
  assert calls[2]['exact_mask'] == 'e'


def test_each_trained_row_samples_with_its_objectives_sampler(monkeypatch):
  """conditioning / replacement rows go through `sampling.objectives.complete` with the
  objective their run was trained with, never through the masked sampler."""
  calls = []
  objectives = {'conditioning': 'conditioning', 'replacement': 'unconditional'}
  monkeypatch.setattr(methods, '_trained_baseline', lambda wd, name: name)
  monkeypatch.setattr(methods, '_model', lambda d: ('apply_' + d, 'params', objectives[d]))
  monkeypatch.setattr(methods.objectives, 'complete',
                      lambda obj, fn, *a, **kw: calls.append((obj, fn, kw)) or 'latents')
  fns = methods.make_samplers(default.get_config(), '/unused', ('conditioning', 'replacement'))
  assert fns['conditioning']('k', 'm', 'e', 'r', 7) == 'latents'
  fns['replacement']('k', 'm', 'e', 'r', 7)
  assert calls == [('conditioning', 'apply_conditioning', {'num_steps': 7}),
                   ('unconditional', 'apply_replacement', {'num_steps': 7})]


def test_eval_samples_with_the_trained_runs_settings_and_only_explicit_overrides(tmp_path,
                                                                                monkeypatch):
  """configs/eval.py's own `sample` (25 plain steps) never replaces the trained run's (the demo's
  12 steps with guidance 2); `eval.sample_overrides` changes exactly the keys it names."""
  from configs import eval as eval_config  # pylint: disable=g-import-not-at-top
  from maskvid import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  trained = default.get_config()
  trained.sample.num_steps, trained.sample.guidance, trained.sample.min_hinted = 12, 2.0, 0.5
  workdir_lib.save_config(trained, str(tmp_path / 'diffusion'))
  c = eval_config.get_config()
  resolved, notes = methods.with_run_sample(c, str(tmp_path))
  assert (resolved.sample.num_steps, resolved.sample.guidance, resolved.sample.min_hinted) == (
      12, 2.0, 0.5)
  assert c.sample.num_steps == 25                           # the caller's config is not changed
  assert "'num_steps': 25" in notes[0] and "'guidance': 1.0" in notes[0]
  c.eval.sample_overrides.num_steps = 5
  resolved, _ = methods.with_run_sample(c, str(tmp_path))
  assert (resolved.sample.num_steps, resolved.sample.guidance) == (5, 2.0)
  # The eval's `ours` sampler reads the same settings, whatever config it is handed.
  calls = []
  monkeypatch.setattr(methods, '_model', lambda d: ('apply', 'params', 'masked'))
  monkeypatch.setattr(sampler, 'complete', lambda *a, **kw: calls.append(kw) or 'latents')
  methods.make_samplers(c, str(tmp_path), ('ours',))['ours']('k', 'm', 'e', 'r', 5)
  assert (calls[0]['num_steps'], calls[0]['guidance']) == (5, 2.0)
  c.eval.sample_overrides = {'steps': 5}
  with pytest.raises(ValueError, match='sample_overrides.steps'):
    methods.with_run_sample(c, str(tmp_path))
