"""The package's imports point one way: down the pipeline (read from the source with `ast`).

LAYERS is the order, bottom first; a module may import from its own layer or any lower one.
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / 'maskvid'

LAYERS = (
    ('maskvid.fileio', 'maskvid.workdir', 'maskvid.distributed', 'maskvid.sharding',
     'maskvid.optim', 'maskvid.pictures', 'maskvid.recovery',
     'maskvid.topology', 'maskvid.train'),  # foundation: what every stage and trainer shares
    ('maskvid.geometry',),
    ('maskvid.data', 'maskvid.posed'),                           # datasets, posed scenes
    ('maskvid.vae', 'maskvid.depth'),                            # learned image codecs / depth
    ('maskvid.model', 'maskvid.diffusion'),
    ('maskvid.sampling',),
    ('maskvid.eval', 'maskvid.tasks'),
    ('maskvid.stages',),                                         # orchestration
    ('maskvid.main', 'maskvid.bench', 'maskvid.aot', 'maskvid.roofline'),  # entry points
)
MAX_FUNCTION_LEVEL_IMPORTS = 10


def _modules() -> dict:
  out = {}
  for path in sorted(ROOT.rglob('*.py')):
    name = '.'.join(path.relative_to(ROOT.parent).with_suffix('').parts)
    out[name.removesuffix('.__init__')] = path
  return out


MODULES = _modules()


def _resolve(name: str) -> str:
  while name and name not in MODULES:
    name = name.rpartition('.')[0]
  return name


def _imports(path: pathlib.Path):
  """(imported module, is_function_level) for every maskvid import in the file."""
  tree = ast.parse(path.read_text())
  top = {id(node) for node in tree.body}
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [f'{node.module}.{a.name}' for a in node.names]
    else:
      continue
    for name in names:
      if name.startswith('maskvid'):
        yield _resolve(name), id(node) not in top


def _layer(module: str) -> int:
  for i, layer in enumerate(LAYERS):
    if any(module == p or module.startswith(p + '.') for p in layer):
      return i
  raise AssertionError(f'{module} is in no layer of LAYERS: add it there')


GRAPH = {m: {t for t, _ in _imports(p) if t != m} for m, p in MODULES.items()}


def test_every_module_has_a_layer():
  for m in MODULES:
    if m != 'maskvid':
      _layer(m)


def test_no_upward_import():
  upward = [f'{m} (layer {_layer(m)}) -> {t} (layer {_layer(t)})'
            for m, targets in GRAPH.items() if m != 'maskvid'
            for t in targets if t != 'maskvid' and _layer(t) > _layer(m)]
  assert not upward, '\n'.join(upward)


def test_no_import_cycle():
  state, stack, cycles = {}, [], []

  def visit(m):
    state[m] = 'open'
    stack.append(m)
    for t in sorted(GRAPH.get(m, ())):
      if state.get(t) == 'open':
        cycles.append(stack[stack.index(t):] + [t])
      elif t not in state:
        visit(t)
    stack.pop()
    state[m] = 'done'

  for m in sorted(GRAPH):
    if m not in state:
      visit(m)
  assert not cycles, '\n'.join(' -> '.join(c) for c in cycles)


def test_few_function_level_imports():
  late = [f'{m} -> {t}' for m, p in MODULES.items() for t, late in _imports(p) if late]
  assert len(late) < MAX_FUNCTION_LEVEL_IMPORTS, '\n'.join(late)


@pytest.mark.parametrize('bad', [{'maskvid.data.storage': {'maskvid.diffusion.train'}},
                                 {'maskvid.vae.cache': {'maskvid.vae.codec'},
                                  'maskvid.vae.codec': {'maskvid.vae.cache'}}])
def test_the_checks_catch_what_they_guard(bad, monkeypatch):
  graph = {m: set(t) for m, t in GRAPH.items()}
  for m, t in bad.items():
    graph[m] |= t
  monkeypatch.setattr(__import__(__name__), 'GRAPH', graph)
  failures = 0
  for check in (test_no_upward_import, test_no_import_cycle):
    try:
      check()
    except AssertionError:
      failures += 1
  assert failures >= 1
