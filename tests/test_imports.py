"""Imports inside cifar_jax point one way: no module imports, directly or through others, a
module that imports it back. Read from the source (ast), so lazy imports inside functions count
too, and every module is also imported for real."""

import ast
import importlib
import pathlib

import pytest

from tests.conftest import REPO

PACKAGE = REPO / 'cifar_jax'


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(REPO).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob('*.py'))}


def imported_modules(name: str, path: pathlib.Path) -> set[str]:
  """The cifar_jax modules `name` imports anywhere in its source (`from pkg import mod` names
  the module mod when it is one)."""
  package = name if path.name == '__init__.py' else name.rpartition('.')[0]
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        base = '.'.join(package.split('.')[:len(package.split('.')) - node.level + 1]
                        + ([node.module] if node.module else []))
      found.add(base)
      found.update(f'{base}.{alias.name}' for alias in node.names)
  return {m for m in found if m in MODULES and m != name}


def graph() -> dict[str, set[str]]:
  return {name: imported_modules(name, path) for name, path in MODULES.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
  """A cycle of the import graph as a path [a, b, ..., a], or None. A package's __init__ does
  not count as importing its submodules' importers back: edges into a package are kept only to
  its __init__ module itself, which is how Python resolves them."""
  state = {}  # name -> 'open' while on the path, 'done' after.
  path = []

  def visit(name):
    state[name] = 'open'
    path.append(name)
    for nxt in sorted(edges[name]):
      if state.get(nxt) == 'open':
        return path[path.index(nxt):] + [nxt]
      if nxt not in state:
        cycle = visit(nxt)
        if cycle:
          return cycle
    path.pop()
    state[name] = 'done'
    return None

  for name in sorted(edges):
    if name not in state:
      cycle = visit(name)
      if cycle:
        return cycle
  return None


def test_the_cycle_finder_finds_a_cycle():
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  assert find_cycle({'a': {'b'}, 'b': set(), 'c': {'a', 'b'}}) is None


def test_the_graph_sees_imports_of_every_kind():
  edges = graph()
  assert 'cifar_jax.train.steps' in edges['cifar_jax.train.loop']  # from pkg import mod
  assert 'cifar_jax.train.setup' in edges['cifar_jax.train.loop']  # from pkg.mod import name


def test_no_import_cycle_inside_cifar_jax():
  edges = graph()
  # A package __init__ that only re-exports lazily (cifar_jax.train) names no submodule at
  # import time; edges from a module to its own parent package are how Python finds
  # submodules, not cycles.
  for name in edges:
    edges[name] = {m for m in edges[name] if not name.startswith(m + '.')}
  assert find_cycle(edges) is None, ' -> '.join(find_cycle(edges))


@pytest.mark.parametrize('name', [n for n in MODULES if not n.endswith('__main__')])
def test_every_module_imports(name):
  importlib.import_module(name)
