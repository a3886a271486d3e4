"""tools/bundle_model.py: a trained model replaces the bundled SavedModel and LiteRT files."""

import dataclasses
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import tensorflow as tf

from tflic import config
from tflic import errors
from tflic.codec import bitstream
from tflic.lite import decoder as decoder_lib
from tflic.model import checkpoint
from tflic.training import trainer as trainer_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "bundle_model.py"


@pytest.fixture(scope="module")
def tool():
  """tools/bundle_model.py as a module (its flags are defined only when it runs)."""
  spec = importlib.util.spec_from_file_location("bundle_model", TOOL)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture
def exports(tool, tiny_model_dir, tiny_lite_dir, monkeypatch):
  """The tool's SavedModel export, made cheap: a copy of the tiny model's (each call's
  (source, average) recorded); its LiteRT conversion is the tiny model's, done already.
  The rest runs: the LiteRT files are checked against the staged SavedModel."""
  calls = []

  def export_checkpoint(source, out, average=False):
    calls.append((source, average))
    shutil.copytree(tiny_model_dir, out)
    return out, 12

  monkeypatch.setattr(tool.savedmodel, "export_checkpoint", export_checkpoint)
  flatbuffers = {name: (tiny_lite_dir / file).read_bytes()
                 for name, file in tool.tflite.FILES.items()}
  monkeypatch.setattr(tool.tflite, "convert", lambda model, name: flatbuffers[name])
  return calls


def _old_bundle(path):
  """A bundled directory holding another model's files and its card."""
  for part in ("model", "lite"):
    (path / part).mkdir(parents=True)
    (path / part / "old").write_text("the previous model")
  (path / "MODEL_CARD.md").write_text("card")
  return path


def _contents(path):
  return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_the_model_and_its_lite_files_replace_the_bundled_ones(tool, exports, tiny_workdir,
                                                               tiny_model_dir, tiny_lite_dir,
                                                               tmp_path):
  bundled = _old_bundle(tmp_path / "bundled")
  step, average, manifest = tool.bundle(str(tiny_workdir), str(bundled))
  assert (step, average, exports) == (12, False, [(str(tiny_workdir), False)])
  assert sorted(p.name for p in tmp_path.iterdir()) == ["bundled"]  # nothing staged left
  assert _contents(bundled / "model") == _contents(tiny_model_dir)
  assert sorted(_contents(bundled / "lite")) == ["analysis.tflite", "manifest.json",
                                                 "synthesis.tflite"]
  assert (bundled / "MODEL_CARD.md").read_text() == "card"
  # The LiteRT files name the bundled SavedModel's entropy model, and decode its files.
  assert json.loads((bundled / "lite" / "manifest.json").read_text()) == manifest
  assert manifest["files"]["entropy_model"]["name"] == os.path.join("..", "model",
                                                                    bitstream.MODEL_ASSET)
  assert decoder_lib.Decoder(str(bundled / "lite")).fingerprint.hex() == (
      manifest["fingerprint"])
  assert manifest["fingerprint"] == json.loads(
      (tiny_lite_dir / "manifest.json").read_text())["fingerprint"]


def test_the_average_is_bundled_where_the_checkpoint_keeps_one(tool, exports, tmp_path,
                                                               monkeypatch):
  """And a failed export changes nothing."""
  cfg = config.load("tiny")
  cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, average_decay=0.5))
  workdir, bundled = tmp_path / "run", _old_bundle(tmp_path / "bundled")
  trainer = trainer_lib.Trainer(cfg, str(workdir), tf.distribute.get_strategy())
  trainer._build_optimizer()  # pylint: disable=protected-access  (as a train step does)
  trainer.start_average()
  checkpoint.save_config(str(workdir), cfg)
  trainer.save()
  before = _contents(bundled)
  def fail(path):
    raise errors.TflicError(f"cannot load SavedModel {path}")

  monkeypatch.setattr(tool.savedmodel, "restore_model", fail)  # the LiteRT export's first step
  for average in (None, False, True):
    with pytest.raises(errors.TflicError, match="cannot load"):
      tool.bundle(str(workdir), str(bundled), average)
  assert [a for _, a in exports] == [True, False, True]
  assert _contents(bundled) == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ["bundled", "run"]


def test_bad_input_is_refused_in_one_line_and_changes_nothing(tiny_workdir, tmp_path):
  bundled = _old_bundle(tmp_path / "bundled")
  before = _contents(bundled)
  cases = {"no trained model in": [f"--checkpoint={tmp_path}"],
           "holds no average": [f"--checkpoint={tiny_workdir}", "--average"]}
  runs = {error: subprocess.Popen(
      [sys.executable, str(TOOL), *flags, f"--bundled={bundled}"], stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
          for error, flags in cases.items()}
  for error, run in runs.items():
    out, err = run.communicate(timeout=300)
    assert run.returncode == 2 and not out
    assert err.startswith("tflic bundle_model: error: ") and err.count("\n") == 1, err
    assert error in err
  assert _contents(bundled) == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ["bundled"]
