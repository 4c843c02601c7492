"""Shared pytest setup: make the repo root importable (`configs`), also under a bare `pytest`."""
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)
