"""Shared test fixtures: paths to the shared data and a quiet TensorFlow."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # pylint: disable=g-import-not-at-top

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


# The longest tests (training, several processes each) first: run in parallel
# (`pytest -n 2`), they then overlap the many short ones instead of ending the run alone.
_FIRST = ("test_train.py", "test_deterministic.py")


def pytest_collection_modifyitems(items):
  items.sort(key=lambda item: item.path.name not in _FIRST)


def _shared(name):
  path = SHARED_DATA / name
  if not path.is_dir():
    pytest.fail(f"{name} images not found at {path}")
  return path


@pytest.fixture(scope="session")
def train_dir():
  return _shared("train")


@pytest.fixture(scope="session")
def kodak_dir():
  return _shared("kodak")


def _random_tiny_workdir(path, mode):
  """A tiny model with random weights, saved as a training directory."""
  import json  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tflic import checkpoint  # pylint: disable=g-import-not-at-top
  from tflic import config  # pylint: disable=g-import-not-at-top
  d = json.loads(config.load("tiny").to_json())
  d["model"]["context_mode"] = mode
  cfg = config.from_dict(d)
  tf.random.set_seed(0)
  model = checkpoint.build_model(cfg)
  # Gains > 1 make the latents span several symbols, as in a trained model; growing
  # with the lambda, as trained gains do, so that files grow with the quality.
  lambdas = model.log_gains.shape[0]
  model.log_gains.assign(tf.random.uniform(model.log_gains.shape, 0.5, 1.0) +
                         tf.linspace(0.0, 1.0, lambdas)[:, None])
  checkpoint.save_model(str(path), cfg, model)
  return path


@pytest.fixture(scope="session")
def tiny_workdir(tmp_path_factory):
  """Training directory of a random tiny wavefront model."""
  return _random_tiny_workdir(tmp_path_factory.mktemp("tiny_wavefront"), "wavefront")


@pytest.fixture(scope="session")
def tiny_serial_workdir(tmp_path_factory):
  """Training directory of a random tiny serial-mask model."""
  return _random_tiny_workdir(tmp_path_factory.mktemp("tiny_serial"), "serial")


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_workdir, tmp_path_factory):
  """Exported SavedModel of the tiny wavefront model (usable as --model)."""
  from tflic import savedmodel  # pylint: disable=g-import-not-at-top
  out = tmp_path_factory.mktemp("exported") / "tiny"
  savedmodel.export_checkpoint(str(tiny_workdir), str(out))
  return out


@pytest.fixture(scope="session")
def tiny_lite_dir(tiny_workdir, tmp_path_factory):
  """LiteRT export (`python -m export.tflite`) of the tiny wavefront model; its files have
  the fingerprint of the tiny model's SavedModel (tiny_model_dir)."""
  import sys  # pylint: disable=g-import-not-at-top
  if str(REPO) not in sys.path:  # export/ is not installed with tflic
    sys.path.append(str(REPO))
  from export import tflite  # pylint: disable=g-import-not-at-top
  from tflic import savedmodel  # pylint: disable=g-import-not-at-top
  out = tmp_path_factory.mktemp("lite") / "tiny"
  tflite.export(savedmodel.restore_model(str(tiny_workdir)), str(out))
  return out
