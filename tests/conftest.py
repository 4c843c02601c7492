"""Shared pytest setup.

- Makes the repo root importable (`configs`), also under a bare `pytest`.
- Tests are dominated by XLA compile time on CPU, not by run time: the tests' tiny programs
  compile ~2x faster with LLVM's expensive passes off, so every test (and every subprocess it
  starts, which inherits the environment) uses that. Benchmarks and real runs do not.
"""
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

_FAST_COMPILE = '--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true'
if 'xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + _FAST_COMPILE).strip()

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

# The integration tier (`make test` runs it, `make test-fast` skips it): multi-process and
# multi-device runs, stage-to-stage pipelines and trainers run for many steps (these modules, and
# single tests marked `@pytest.mark.slow`). Everything else is the unit tier.
SLOW_MODULES = frozenset({
    'test_distributed', 'test_distributed_launch', 'test_train_sharded', 'test_sampling_mesh',
    'test_vae_data_parallel', 'test_train_loop', 'test_vae_cache', 'test_tasks_e2e',
    'test_video_folder_stages', 'test_ladder', 'test_recovery', 'test_eval_lpips',
    'test_cache_sharded', 'test_vae_train', 'test_vae_external',
})


def pytest_configure(config):
  config.addinivalue_line('markers', 'slow: integration tier (skipped by `make test-fast`)')


def pytest_collection_modifyitems(config, items):
  del config
  for item in items:
    if item.module.__name__.rpartition('.')[2] in SLOW_MODULES:
      item.add_marker(pytest.mark.slow)
