"""Names a newcomer can navigate and units a reader can hold (read from the source with `ast`):
no function over 80 lines, no module over 400 (the config defaults excepted), one module per
name among the names that used to collide, and no re-export shims outside package __init__s."""
import ast
import collections
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCES = sorted(p for d in ('maskvid', 'tests', 'configs') for p in (ROOT / d).rglob('*.py'))
MAX_FUNCTION_LINES, MAX_MODULE_LINES = 80, 400
LONG_ALLOWED = {'configs/default.py'}   # the config defaults: one flat table of every key


def _rel(path: pathlib.Path, root: pathlib.Path = ROOT) -> str:
  return str(path.relative_to(root))


def long_functions(paths, root: pathlib.Path = ROOT) -> list[str]:
  out = []
  for path in paths:
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        lines = node.end_lineno - node.lineno + 1
        if lines > MAX_FUNCTION_LINES and _rel(path, root) not in LONG_ALLOWED:
          out.append(f'{_rel(path, root)}:{node.lineno} {node.name} ({lines} lines)')
  return out


def test_no_function_over_80_lines():
  assert not long_functions(SOURCES)


def test_no_module_over_400_lines():
  long = [f'{_rel(p)} ({n} lines)' for p in SOURCES
          if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES and _rel(p) not in LONG_ALLOWED]
  assert not long, long


def test_one_module_per_name():
  by_name = collections.defaultdict(list)
  for path in (ROOT / 'maskvid').rglob('*.py'):
    by_name[path.stem].append(_rel(path))
  for name in ('checkpoint', 'masks', 'preview', 'loop', 'baselines'):
    assert len(by_name.get(name, [])) <= 1, by_name[name]
  assert not (ROOT / 'maskvid' / 'training_loop.py').exists()


def test_no_reexport_shims_outside_package_inits():
  shims = [f'{_rel(p)}:{i}' for p in (ROOT / 'maskvid').rglob('*.py') if p.name != '__init__.py'
           for i, line in enumerate(p.read_text().splitlines(), 1) if 'noqa: F401' in line]
  assert not shims, shims


def test_the_check_catches_a_long_function(tmp_path):
  path = tmp_path / 'probe.py'
  path.write_text('def f():\n' + '  x = 1\n' * 79 + '\n\ndef g():\n' + '  x = 1\n' * 80)
  assert long_functions([path], tmp_path) == ['probe.py:83 g (81 lines)']
