"""`python -m export.tflite` and `tflic.lite.synthesis`: the networks on LiteRT.

One tiny random model is exported once; every size is run through that one file.
"""

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import textwrap

from absl import flags
from absl.testing import flagsaver
from ai_edge_litert.interpreter import Interpreter
import numpy as np
import pytest
import tensorflow as tf

from tflic import cli
from tflic.codec import bitstream
from tflic.deploy import savedmodel
from tflic import errors
from tflic.lite import synthesis as lite
from tflic.model.layers import swin_block

REPO = pathlib.Path(__file__).resolve().parents[1]
# export/ is a package of the repository, not installed with tflic: plain `pytest` does
# not put the repository on the path as `python -m pytest` does.
if str(REPO) not in sys.path:
  sys.path.append(str(REPO))
from export import tflite  # pylint: disable=g-import-not-at-top,wrong-import-position

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
# 1x1 and 1-wide latents, odd sizes that pad every stage's windows, a bigger non-square
# one, and back to 1x1 (the interpreter shrinks again).
SIZES = [(1, 1), (1, 7), (5, 3), (11, 6), (1, 1)]


@pytest.fixture(scope="module")
def restored(tiny_workdir):
  return savedmodel.restore_model(str(tiny_workdir))


@pytest.fixture(scope="module")
def exported(tiny_lite_dir):
  """(directory, manifest) of the tiny model's LiteRT export."""
  return tiny_lite_dir, json.loads((tiny_lite_dir / tflite.MANIFEST_FILE).read_text())


@pytest.fixture(scope="module")
def tf_synthesize(restored):
  """The TensorFlow reference, in a graph as the codec runs it."""
  model = restored.model
  spec = [tf.TensorSpec([1, None, None, model.config.latent_channels], tf.float32),
          tf.TensorSpec([], tf.float32)]
  return tf.function(lambda latent, quality: model.synthesize(latent, model.log_gain(quality)),
                     input_signature=spec)


def _latent(height, width, channels, seed=0):
  return np.random.default_rng(seed).normal(0, 3, (1, height, width, channels)).astype(
      np.float32)


def test_the_export_has_builtin_ops_only(exported):
  out, manifest = exported
  builtins, custom = tflite.operators((out / tflite.SYNTHESIS_FILE).read_bytes())
  assert custom == []
  assert builtins == manifest["synthesis"]["builtin_ops"]


def test_the_check_rejects_flex_ops():
  @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32)])
  def roll(x):
    return tf.roll(x, [1, 1], [0, 1])
  converter = tf.lite.TFLiteConverter.from_concrete_functions([roll.get_concrete_function()],
                                                              roll)
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                         tf.lite.OpsSet.SELECT_TF_OPS]
  with pytest.raises(errors.TflicError, match="non-builtin ops \\(FlexRoll\\)"):
    tflite.check_builtin_only(converter.convert())


def test_the_export_is_the_codecs_synthesis(restored, tf_synthesize):
  # What is converted is the codec's synthesis itself, from the model's own layers.
  model = restored.model
  converted = tf.function(lambda latent, quality: tflite.synthesize(model, latent, quality),
                          input_signature=tf_synthesize.input_signature)
  for (height, width), quality in zip(SIZES[1:4], (0.0, 0.37, 1.0)):
    latent = _latent(height, width, model.config.latent_channels)
    np.testing.assert_array_equal(converted(latent, quality).numpy(),
                                  tf_synthesize(latent, quality).numpy())


def test_a_shifted_block_converts_and_computes_the_layers_floats():
  # The tiny model has no shifted block (one block per stage): this one stands in.
  tf.random.set_seed(1)
  block = swin_block.SwinBlock(8, 2, 4, shift=True)
  spec = [tf.TensorSpec([1, None, None, 8], tf.float32)]
  layer = tf.function(block, input_signature=spec)
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [layer.get_concrete_function()], block)
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  flatbuffer = converter.convert()
  tflite.check_builtin_only(flatbuffer)
  interpreter = Interpreter(model_content=flatbuffer)
  for height, width in SIZES + [(8, 12)]:
    x = _latent(height, width, 8)
    expected = layer(x).numpy()
    interpreter.resize_tensor_input(0, x.shape, strict=True)
    interpreter.allocate_tensors()
    interpreter.set_tensor(0, x)
    interpreter.invoke()
    np.testing.assert_allclose(
        interpreter.get_tensor(interpreter.get_output_details()[0]["index"]), expected,
        rtol=0, atol=1e-4, err_msg=f"{height}x{width}")


def test_litert_matches_tensorflow_at_any_size(exported, restored, tf_synthesize):
  out, _ = exported
  synthesis = lite.Synthesis(str(out / tflite.SYNTHESIS_FILE), num_threads=1)
  channels = restored.config.model.latent_channels
  for i, (height, width) in enumerate(SIZES):
    latent, quality = _latent(height, width, channels, seed=i), i / (len(SIZES) - 1)
    image = synthesis(latent, quality)
    assert image.shape == (1, 16 * height, 16 * width, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image, tf_synthesize(latent, quality).numpy(), rtol=0,
                               atol=1e-4, err_msg=f"latent {height}x{width}")


def test_the_analysis_matches_tensorflow_at_any_size(exported, restored):
  out, _ = exported
  analysis = lite.Analysis(str(out / tflite.ANALYSIS_FILE), num_threads=1)
  model = restored.model
  tf_analyze = tf.function(lambda image, quality: tflite.analyze(model, image, quality),
                           input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32),
                                            tf.TensorSpec([], tf.float32)])
  rng = np.random.default_rng(0)
  for height, width in [(16, 16), (16, 112), (80, 48), (32, 16)]:
    image = (rng.integers(0, 256, (1, height, width, 3)) / 255).astype(np.float32)
    y, z = analysis(image, 0.3)
    expected_y, expected_z = tf_analyze(image, 0.3)
    assert y.shape == (1, height // 16, width // 16, model.config.latent_channels)
    assert z.shape == (1, -(-height // 64), -(-width // 64), model.config.hyper_channels)
    np.testing.assert_allclose(y, expected_y.numpy(), rtol=0, atol=1e-3)
    np.testing.assert_allclose(z, expected_z.numpy(), rtol=0, atol=1e-3)
  with pytest.raises(errors.TflicError, match=r"multiples of 16, got float32 \[1, 17, 16, 3\]"):
    analysis(np.zeros([1, 17, 16, 3], np.float32), 0.5)


def test_the_manifest_describes_the_files(exported, restored):
  out, manifest = exported
  assert json.loads((out / tflite.MANIFEST_FILE).read_text()) == manifest
  assert sorted(os.listdir(out)) == sorted([tflite.MANIFEST_FILE, tflite.SYNTHESIS_FILE,
                                            tflite.ANALYSIS_FILE, tflite.ENTROPY_MODEL_FILE])
  for entry in manifest["files"].values():
    data = (out / entry["name"]).read_bytes()
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert entry["bytes"] == len(data)
  cfg = restored.config.model
  assert manifest["format_version"] == bitstream.VERSION
  assert manifest["fingerprint"] == restored.fingerprint.hex()
  assert (manifest["latent_stride"], manifest["hyper_stride"]) == (16, 4)
  assert (manifest["context_mode"], manifest["latent_channels"], manifest["hyper_channels"],
          manifest["num_groups"]) == (cfg.context_mode, cfg.latent_channels,
                                      cfg.hyper_channels, cfg.num_groups)
  assert manifest["config"] == json.loads(restored.config.to_json())
  with np.load(out / manifest["files"]["entropy_model"]["name"]) as stored:
    assert sorted(stored.files) == sorted(restored.arrays)
    for key in stored.files:
      np.testing.assert_array_equal(stored[key], restored.arrays[key])
  latent = manifest["synthesis"]["inputs"]["latent"]
  assert latent["shape"] == [1, -1, -1, cfg.latent_channels]
  assert manifest["synthesis"]["inputs"]["quality"]["shape"] == []
  assert manifest["synthesis"]["outputs"]["image"]["shape"] == [1, -1, -1, 3]
  analysis = manifest["analysis"]
  assert analysis["inputs"]["image"]["shape"] == [1, -1, -1, 3]
  assert analysis["outputs"]["latent"]["shape"] == [1, -1, -1, cfg.latent_channels]
  assert analysis["outputs"]["hyper_latent"]["shape"] == [1, -1, -1, cfg.hyper_channels]
  builtins, custom = tflite.operators((out / tflite.ANALYSIS_FILE).read_bytes())
  assert (custom, builtins) == ([], analysis["builtin_ops"])


def test_an_existing_out_is_refused(tiny_workdir, tmp_path, capsys):
  out = tmp_path / "existing"
  out.mkdir()
  (out / "keep").write_text("mine")
  argv = ["export.tflite", f"--model={tiny_workdir}", f"--out={out}"]
  with flagsaver.flagsaver():
    flags.FLAGS(argv)
    with pytest.raises(SystemExit) as exited:
      cli.guarded(tflite.main, "export.tflite")(argv[:1])
  assert exited.value.code == 2
  assert capsys.readouterr().err == (
      f"tflic export.tflite: error: {out} exists; pass --overwrite to replace it\n")
  assert os.listdir(out) == ["keep"]


def test_overwrite_replaces_the_directory(exported, restored, tmp_path, monkeypatch):
  flatbuffers = {name: (exported[0] / file).read_bytes() for name, file in tflite.FILES.items()}
  monkeypatch.setattr(tflite, "convert", lambda model, name: flatbuffers[name])  # done already
  out = tmp_path / "existing"
  out.mkdir()
  (out / "stale").write_text("old")
  tflite.export(restored, str(out), overwrite=True)
  assert sorted(os.listdir(out)) == sorted([tflite.MANIFEST_FILE, tflite.SYNTHESIS_FILE,
                                            tflite.ANALYSIS_FILE, tflite.ENTROPY_MODEL_FILE])
  assert (out / tflite.SYNTHESIS_FILE).read_bytes() == flatbuffers["synthesis"]
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no staging left


def test_a_linked_entropy_model_is_named_not_copied(exported, tiny_model_dir, tmp_path,
                                                    monkeypatch):
  from tflic.lite import decoder as decoder_lib  # pylint: disable=g-import-not-at-top
  flatbuffers = {name: (exported[0] / file).read_bytes() for name, file in tflite.FILES.items()}
  monkeypatch.setattr(tflite, "convert", lambda model, name: flatbuffers[name])  # done already
  asset = pathlib.Path(tiny_model_dir) / bitstream.MODEL_ASSET
  out = tmp_path / "lite"
  manifest = tflite.export(savedmodel.restore_model(str(tiny_model_dir)), str(out),
                           entropy_model=str(asset))
  assert tflite.ENTROPY_MODEL_FILE not in os.listdir(out)
  entry = manifest["files"]["entropy_model"]
  assert (out / entry["name"]).resolve() == asset.resolve()
  assert entry["sha256"] == hashlib.sha256(asset.read_bytes()).hexdigest()
  assert decoder_lib.Decoder(str(out)).fingerprint == bytes.fromhex(manifest["fingerprint"])


def test_synthesis_runs_without_tensorflow(exported, restored, tf_synthesize, tmp_path):
  out, _ = exported
  blocker = tmp_path / "no_tf" / "tensorflow"
  blocker.mkdir(parents=True)
  (blocker / "__init__.py").write_text("raise ImportError('TensorFlow is blocked')\n")
  latent = _latent(2, 3, restored.config.model.latent_channels)
  np.save(tmp_path / "latent.npy", latent)
  script = textwrap.dedent(f"""
      import sys
      import numpy as np
      from tflic import errors
      from tflic.lite import synthesis
      s = synthesis.Synthesis({str(out / tflite.SYNTHESIS_FILE)!r})
      np.save({str(tmp_path / "image.npy")!r}, s(np.load({str(tmp_path / "latent.npy")!r}),
                                                 0.25))
      try:
        s(np.zeros([1, 2, 3]), 0.25)
      except errors.TflicError as e:
        print(e)
      assert not any(m.startswith("tensorflow") for m in sys.modules), "TF imported"
  """)
  result = subprocess.run(
      [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
      env=dict(ENV, PYTHONPATH=os.pathsep.join([str(blocker.parent), str(REPO)])),
      timeout=120, check=False)
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith("expected a latent of shape [1, h, w, ")
  np.testing.assert_allclose(np.load(tmp_path / "image.npy"),
                             tf_synthesize(latent, 0.25).numpy(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("latent,quality,message", [
    ([1, 2, 3], 0.5, r"expected a latent of shape \[1, h, w, 32\].*got \[1, 2, 3\]"),
    ([2, 2, 3, 32], 0.5, "got \\[2, 2, 3, 32\\]"),
    ([1, 2, 3, 31], 0.5, "got \\[1, 2, 3, 31\\]"),
    ([1, 0, 3, 32], 0.5, "got \\[1, 0, 3, 32\\]"),
    ("int", 0.5, "the latent must be float"),
    ([1, 2, 3, 32], 1.5, "quality must be a number in \\[0, 1\\], got 1.5"),
])
def test_wrong_inputs_are_one_line_errors(exported, latent, quality, message):
  out, _ = exported
  synthesis = lite.Synthesis(str(out / tflite.SYNTHESIS_FILE))
  latent = np.zeros([1, 2, 3, 32], np.int32) if latent == "int" else np.zeros(latent,
                                                                              np.float32)
  with pytest.raises(errors.TflicError, match=message) as raised:
    synthesis(latent, quality)
  assert "\n" not in str(raised.value)


def test_a_file_that_is_not_a_synthesis_is_refused(tmp_path):
  (tmp_path / "bad.tflite").write_bytes(b"not a flatbuffer")
  with pytest.raises(errors.TflicError, match="cannot load the LiteRT synthesis"):
    lite.Synthesis(str(tmp_path / "bad.tflite"))
  with pytest.raises(errors.TflicError, match="LiteRT model not found"):
    lite.Synthesis(str(tmp_path / "missing.tflite"))
