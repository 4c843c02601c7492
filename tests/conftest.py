"""Shared pytest setup.

- Makes the repo root importable (`configs`), also under a bare `pytest`.
- Tests are dominated by XLA compile time on CPU, not by run time: the tests' tiny programs
  compile ~2x faster with LLVM's expensive passes off, so every test (and every subprocess it
  starts, which inherits the environment) uses that, and one persistent compilation cache.
  Benchmarks and real runs do not.
"""
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

_FAST_COMPILE = '--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true'
if 'xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + _FAST_COMPILE).strip()
# One persistent compilation cache per session, inherited by every subprocess a test starts:
# the multi-process and kill/resume tests compile the same programs in several fresh processes.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  import tempfile  # pylint: disable=g-import-not-at-top
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='maskvid-test-xla-cache-')

# libtpu is installed (the compile job's TPU compiler): without this every test process and
# subprocess would first try, and fail, to open a TPU. Compile-only TPU devices
# (`maskvid.topology`) do not need the TPU backend.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TPU_SKIP_MDS_QUERY', '1')

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

# Two tiers: `make test` runs every test, `make test-fast` only the unit tier. A test is in the
# integration tier when it is marked `@pytest.mark.slow` (multi-process and multi-device runs,
# stage pipelines, trainers run for many steps, the real LPIPS weights), by itself or by its
# module's `pytestmark`; everything else, however it is grouped, is the unit tier.


def pytest_configure(config):
  config.addinivalue_line('markers', 'slow: integration tier (skipped by `make test-fast`)')
