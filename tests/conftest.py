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
