"""Shared test fixtures: paths to the shared data and a quiet TensorFlow."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # pylint: disable=g-import-not-at-top

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def train_dir():
  path = SHARED_DATA / "train"
  if not path.is_dir():
    pytest.fail(f"training images not found at {path}")
  return path


@pytest.fixture(scope="session")
def kodak_dir():
  path = SHARED_DATA / "kodak"
  if not path.is_dir():
    pytest.fail(f"Kodak images not found at {path}")
  return path
