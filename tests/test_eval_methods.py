"""`eval.methods.make_samplers`: the options each generative row samples with."""
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
  """conditioning / replacement rows go through `sampling.baselines.complete` with the
  objective their run was trained with, never through the masked sampler."""
  calls = []
  objectives = {'conditioning': 'conditioning', 'replacement': 'unconditional'}
  monkeypatch.setattr(methods, '_trained_baseline', lambda wd, name: name)
  monkeypatch.setattr(methods, '_model', lambda d: ('apply_' + d, 'params', objectives[d]))
  monkeypatch.setattr(methods.baselines, 'complete',
                      lambda obj, fn, *a, **kw: calls.append((obj, fn, kw)) or 'latents')
  fns = methods.make_samplers(default.get_config(), '/unused', ('conditioning', 'replacement'))
  assert fns['conditioning']('k', 'm', 'e', 'r', 7) == 'latents'
  fns['replacement']('k', 'm', 'e', 'r', 7)
  assert calls == [('conditioning', 'apply_conditioning', {'num_steps': 7}),
                   ('unconditional', 'apply_replacement', {'num_steps': 7})]
