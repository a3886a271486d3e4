"""Runs one module of tests/ with pytest: the main of every py_test in tests/BUILD.

Usage (as the py_test does): pytest_main.py tests/test_NAME.py [PYTEST ARGS...]

The tests find the repository from their own file with symlinks resolved
(`pathlib.Path(__file__).resolve().parents[1]`), the shared images beside it
(`REPO.parent / "shared" / "data"`), and run `python -m tflic...` there. In Bazel's
runfiles tree every file is a symlink into the source tree, so they would resolve their
way out of it: to the source tree and the extensions `pip install -e .` built there
(tflic/codec/rangecoder/tf_ops.py finds _tf_ops.so that way too). This runner therefore lays
the runfiles out as a checkout under $TEST_TMPDIR: the Python files copied (they then
resolve to the checkout), every other file symlinked (the range coder's Python extension
and TF op library as Bazel built them, the bundled model, configs, ...), and
shared/data beside it (@tflic_shared_data). It runs pytest there with PYTHONPATH set to
the checkout, so that the tests, the code they import and the processes they start all
use what Bazel built.

It also implements Bazel's test sharding (shard_count: the i-th of every N tests, in the
order tests/conftest.py gives them) and writes Bazel's JUnit XML.
"""

import os
import pathlib
import shutil
import sys
import tempfile

import pytest

# The repository that shared_data (tools/bazel/local_config.bzl) makes.
SHARED_DATA_REPOSITORY = "tflic_shared_data"


def _runfiles():
  """(runfiles root, the main repository's directory in it)."""
  if os.environ.get("TEST_SRCDIR") and os.environ.get("TEST_WORKSPACE"):
    root = pathlib.Path(os.environ["TEST_SRCDIR"])
    return root, root / os.environ["TEST_WORKSPACE"]
  main = pathlib.Path(os.path.abspath(__file__)).parents[2]  # <root>/<ws>/tools/bazel/
  return main.parent, main


def _lay_out(source, checkout):
  """Makes `checkout` a tree of `source`'s files: .py files copied, others symlinked."""
  for dirpath, dirnames, filenames in os.walk(source, followlinks=True):
    relative = os.path.relpath(dirpath, source)
    if relative == ".":
      dirnames[:] = [d for d in dirnames if d != "external"]  # other repositories
    dirnames[:] = [d for d in dirnames if d != "__pycache__"]
    target = checkout / relative
    target.mkdir(parents=True, exist_ok=True)
    for name in filenames:
      path = os.path.join(dirpath, name)
      if name.endswith(".py"):
        shutil.copyfile(path, target / name)
      else:
        os.symlink(os.path.realpath(path), target / name)


class _Shard:
  """Keeps every TEST_TOTAL_SHARDS-th test from TEST_SHARD_INDEX, after the conftest's
  ordering (longest first), so that the shards share the long tests."""

  def __init__(self, index, total):
    self.index = index
    self.total = total

  @pytest.hookimpl(trylast=True)
  def pytest_collection_modifyitems(self, config, items):
    keep = items[self.index::self.total]
    kept = set(map(id, keep))
    config.hook.pytest_deselected(items=[item for item in items if id(item) not in kept])
    items[:] = keep


def main(argv):
  if len(argv) < 2:
    sys.exit(f"usage: {argv[0]} tests/test_NAME.py [pytest args...]")
  test, pytest_args = argv[1], argv[2:]
  runfiles, main_repository = _runfiles()

  base = pathlib.Path(os.environ.get("TEST_TMPDIR") or tempfile.mkdtemp(prefix="tflic_test_"))
  checkout = base / "checkout" / "tflic"
  if checkout.parent.exists():
    shutil.rmtree(checkout.parent)
  _lay_out(main_repository, checkout)
  (checkout.parent / "shared").mkdir()
  os.symlink(runfiles / SHARED_DATA_REPOSITORY / "data", checkout.parent / "shared" / "data")

  # The checkout, not the runfiles, for this process and the ones the tests start.
  inside = lambda path: os.path.abspath(path or ".").startswith(str(runfiles) + os.sep)
  sys.path[:] = [str(checkout)] + [p for p in sys.path if p and not inside(p)]
  os.environ["PYTHONPATH"] = str(checkout)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  os.chdir(checkout)

  libraries = sorted((checkout / "tflic" / "codec" / "rangecoder").glob("*.so"))
  print(f"{test} in {checkout}; range coder: " +
        ", ".join(f"{p.name} -> {os.path.realpath(p)}" for p in libraries), flush=True)
  # pytest's temporary directories: a short path in /tmp, as outside Bazel (Unix socket
  # paths must be short), of this run alone (others' runs rotate /tmp/pytest-of-USER).
  basetemp = tempfile.mkdtemp(prefix="tflic-bazel-", dir="/tmp" if os.path.isdir("/tmp") else None)
  args = [str(checkout / test), "-p", "no:cacheprovider", "-q", "-rfEs",
          f"--basetemp={basetemp}"]
  if os.environ.get("XML_OUTPUT_FILE"):
    args.append(f"--junitxml={os.environ['XML_OUTPUT_FILE']}")
  plugins = []
  total = int(os.environ.get("TEST_TOTAL_SHARDS", "1"))
  if total > 1:
    plugins.append(_Shard(int(os.environ["TEST_SHARD_INDEX"]), total))
    if os.environ.get("TEST_SHARD_STATUS_FILE"):
      pathlib.Path(os.environ["TEST_SHARD_STATUS_FILE"]).touch()
  try:
    status = pytest.main(args + pytest_args, plugins=plugins)
  finally:
    shutil.rmtree(basetemp, ignore_errors=True)
  if status == pytest.ExitCode.NO_TESTS_COLLECTED and total > 1:
    status = pytest.ExitCode.OK  # more shards than tests
  return int(status)


if __name__ == "__main__":
  sys.exit(main(sys.argv))
