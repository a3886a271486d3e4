"""The package's imports run one way: no cycles between tflic's parts or its modules."""

import ast
import collections
import graphlib
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "tflic"


def _imports():
  """(importing module, imported module) pairs of tflic's own modules, from the source."""
  for path in PACKAGE.rglob("*.py"):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
          node.module.split(".")[0] == "tflic"):
        for alias in node.names:  # `from a.b import c`: c may be a module or a name in a.b
          name = f"{node.module}.{alias.name}"
          is_module = any((PACKAGE.parent / (name.replace(".", "/") + s)).exists()
                          for s in (".py", "/__init__.py"))
          yield module, name if is_module else node.module
      elif isinstance(node, ast.Import):
        yield from ((module, a.name) for a in node.names if a.name.split(".")[0] == "tflic")


def _part(module):
  """The part of the system a module belongs to: tflic's top-level module or package."""
  return module.split(".")[1] if "." in module else module


@pytest.mark.parametrize("granularity", ["modules", "parts"])
def test_imports_have_no_cycles(granularity):
  graph = collections.defaultdict(set)
  for importer, imported in _imports():
    if granularity == "parts":
      importer, imported = _part(importer), _part(imported)
    if importer != imported and not imported.startswith(importer + "."):
      graph[importer].add(imported)
  assert len(graph) > 5  # the source was read
  try:
    list(graphlib.TopologicalSorter(graph).static_order())
  except graphlib.CycleError as e:
    pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")


def test_the_model_and_codec_sit_below_the_commands():
  parts = collections.defaultdict(set)
  for importer, imported in _imports():
    parts[_part(importer)].add(_part(imported))
  assert parts["model"] <= {"model", "config", "errors"}
  assert "training" not in parts["codec"] and "lite" not in parts["codec"]
