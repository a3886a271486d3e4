r"""Exports a model's decoder halves for LiteRT: the synthesis and the integer entropy model.

  python -m export.tflite --model=tflic/bundled/model --out=exported/lite [--overwrite]

`--model` is an exported SavedModel or a training directory (default: the bundled model).
The output directory holds:
  synthesis.tflite           g_s as a LiteRT model with dynamic shapes, builtin ops only:
                             signature "synthesize", inputs "latent" (float32
                             [1, h, w, M], the integer latent / 1024; any h, w >= 1) and
                             "quality" (float32 []), output "image" (float32
                             [1, 16h, 16w, 3], what `TflicModel.synthesize` returns: the
                             caller crops it and rounds clip(255 x, 0, 255)). The log-gain
                             interpolation runs inside.
  integer_entropy_model.npz  the integer entropy model and coding tables
                             (`tflic.deterministic.reference` reads it).
  manifest.json              what a decoder needs to check and wire them (`manifest`).
`tflic.lite.synthesis.Synthesis` runs the synthesis without TensorFlow.

LiteRT has no builtin for two ops of the Swin blocks, so the converted graph is traced
from a twin of `SwinBlock.call` (`swin_block`) that reads the block's own weights:
`tf.roll` (a flex op) becomes two slices and a concat per axis, and the attention mask's
new-axis indexing, a StridedSlice the converter leaves to flex, becomes expand_dims and
reshape. Both only move values, so the twin computes the same floats as the layer
(tests compare them bitwise in TensorFlow); tflic/layers/ is unchanged.
"""

import functools
import hashlib
import json
import os
import tempfile
import time

from absl import app
import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.python import schema_util
from tensorflow.lite.python.convert_phase import ConverterError

import tflic
from tflic import backends
from tflic import bitstream
from tflic import cli
from tflic import common_flags
from tflic import errors
from tflic import model as model_lib
from tflic import savedmodel
from tflic import windows
from tflic.deterministic import entropy_model as integer_model
from tflic.deterministic import reference
from tflic.layers import SwinBlock
from tflic.layers import swin_block as swin_lib
from tflic.lite import synthesis as lite

_OUT = common_flags.OUT
_OVERWRITE = common_flags.OVERWRITE
common_flags.declare_key_flags(__name__, "model", "out", "overwrite")

SYNTHESIS_FILE = "synthesis.tflite"
ENTROPY_MODEL_FILE = reference.FILENAME
MANIFEST_FILE = "manifest.json"
# The export checks the converted model against TensorFlow on a latent that pads and
# shifts windows at every stage; a quarter of a uint8 level is far above float noise
# (1e-6 on the bundled model) and far below any conversion bug.
_CHECK_LATENT_SIZE = (3, 5)
_CHECK_TOLERANCE = 0.25 / 255
# The layers' window (un)partitioning and mask value, which convert as they are.
_window_partition = functools.partial(windows.partition, backends.TENSORFLOW)
_window_merge = functools.partial(windows.merge, backends.TENSORFLOW)
_MASKED = swin_lib._MASKED  # pylint: disable=protected-access
_BUILTIN_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items()
                  if not name.startswith("_")}


def _roll(x, shift, axes):
  """tf.roll(x, shift, axes) for |shift| below every size, as slices and a concat."""
  for axis in axes:
    lead = (slice(None),) * axis
    x = tf.concat([x[lead + (slice(-shift, None),)], x[lead + (slice(None, -shift),)]], axis)
  return x


def attention_mask(height, width, padded_height, padded_width, window_size, shift):
  """`swin_block.attention_mask`, the same values, from ops LiteRT has as builtins."""
  rows = tf.range(padded_height)
  cols = tf.range(padded_width)
  valid = tf.logical_and(tf.expand_dims(rows, 1) < height, tf.expand_dims(cols, 0) < width)
  if shift:
    def regions(index, size):
      return tf.where(index < size - window_size, 0, tf.where(index < size - shift, 1, 2))
    ids = (tf.expand_dims(regions(rows, padded_height), 1) * 3 +
           tf.expand_dims(regions(cols, padded_width), 0))
    valid = _roll(valid, -shift, (0, 1))
  else:
    ids = tf.zeros([padded_height, padded_width], tf.int32)
  ids = tf.where(valid, ids, -1)
  ids = _window_partition(tf.reshape(ids, [1, padded_height, padded_width, 1]), window_size)
  ids = tf.reshape(ids, [-1, window_size**2])  # [nW, N]
  return tf.where(tf.equal(tf.expand_dims(ids, 2), tf.expand_dims(ids, 1)), 0.0, _MASKED)


def swin_block(block, x):
  """`block(x)` (a SwinBlock) with the ops of `_roll` and `attention_mask`: the same
  float ops in the same order, on the block's weights."""
  ws = block.window_size
  shape = tf.shape(x)
  batch, height, width = shape[0], shape[1], shape[2]
  padded_height = (height + ws - 1) // ws * ws
  padded_width = (width + ws - 1) // ws * ws
  shift = ws // 2 if block.shift else 0

  h = block.norm1(x)
  h = tf.pad(h, [[0, 0], [0, padded_height - height], [0, padded_width - width], [0, 0]])
  if shift:
    h = _roll(h, -shift, (1, 2))
  mask = attention_mask(height, width, padded_height, padded_width, ws, shift)
  h = block.attn(_window_partition(h, ws), mask=mask)
  h = _window_merge(h, batch, padded_height, padded_width, ws)
  if shift:
    h = _roll(h, shift, (1, 2))
  x = x + h[:, :height, :width]
  return x + block.mlp(block.norm2(x))


def synthesize(model, latent, quality):
  """`model.synthesize(latent, model.log_gain(quality))` with `swin_block` for the Swin
  blocks: the same floats in TensorFlow, and a graph LiteRT runs with builtins."""
  x = latent * tf.exp(-model.log_gain(quality))
  for layer in model.synthesis.layers:
    x = swin_block(layer, x) if isinstance(layer, SwinBlock) else layer(x)
  return x + 0.5


class _SynthesisModule(tf.Module):
  """The synthesis with a named signature, to be saved and converted."""

  def __init__(self, model):
    super().__init__(name="tflic_synthesis")
    # Kept out of the object graph: Keras would trace its training call into the
    # SavedModel. The variables the synthesis reads are tracked directly.
    self.__dict__["model"] = model
    self.model_variables = list(model.synthesis.variables) + [model.log_gains]
    # The specs' names are the signature's input keys.
    spec = [tf.TensorSpec([1, None, None, model.config.latent_channels], tf.float32,
                          name=lite.LATENT),
            tf.TensorSpec([], tf.float32, name=lite.QUALITY)]

    def run(latent, quality):
      return {lite.IMAGE: synthesize(model, latent, quality)}
    self.synthesize = tf.function(run, input_signature=spec)


def convert(model):
  """The synthesis of a TflicModel as LiteRT flatbuffer bytes (builtin ops only).

  Converted from a temporary SavedModel rather than from the concrete function: the graph
  is the same, and the flatbuffer then carries the named signature `Synthesis` reads.
  """
  module = _SynthesisModule(model)
  with tempfile.TemporaryDirectory(prefix="tflic-synthesis-") as staging:
    tf.saved_model.save(module, staging, signatures={
        lite.SIGNATURE: module.synthesize.get_concrete_function()})
    converter = tf.lite.TFLiteConverter.from_saved_model(staging,
                                                         signature_keys=[lite.SIGNATURE])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
      return converter.convert()
    except ConverterError as e:
      # The converter's message is a page of MLIR locations; its summary lines say which
      # ops are missing.
      lines = [l.strip() for l in str(e).splitlines()]
      summary = [l for l in lines if l.startswith(("TF Select ops:", "Custom ops:"))]
      raise errors.TflicError("LiteRT conversion of the synthesis failed: " + (
          "; ".join(summary) or next((l for l in lines if l), "unknown error"))) from None


def operators(tflite):
  """(builtin op names, custom op codes) of a LiteRT flatbuffer, each sorted.

  Flex (TF Select) ops are custom ops whose code is "Flex" + the TensorFlow op's name.
  """
  flatbuffer = schema.Model.GetRootAsModel(tflite, 0)
  builtins, custom = set(), set()
  for i in range(flatbuffer.OperatorCodesLength()):
    code = flatbuffer.OperatorCodes(i)
    builtin = schema_util.get_builtin_code_from_operator_code(code)
    if builtin == schema.BuiltinOperator.CUSTOM:
      custom.add(code.CustomCode().decode())
    else:
      builtins.add(_BUILTIN_NAMES[builtin])
  return sorted(builtins), sorted(custom)


def check_builtin_only(tflite):
  """The builtin op names of a LiteRT flatbuffer; TflicError if it has any other op."""
  builtins, custom = operators(tflite)
  if custom:
    raise errors.TflicError(f"the converted synthesis needs non-builtin ops "
                            f"({', '.join(custom)}), which plain LiteRT cannot run")
  return builtins


def _check_against_tensorflow(synthesis, model):
  """TflicError unless LiteRT's output matches TensorFlow's on a test latent."""
  rng = np.random.default_rng(0)
  latent = rng.normal(0.0, 2.0, (1, *_CHECK_LATENT_SIZE, model.config.latent_channels))
  latent = latent.astype(np.float32)
  expected = model.synthesize(tf.constant(latent), model.log_gain(0.5)).numpy()
  difference = float(np.max(np.abs(synthesis(latent, 0.5) - expected)))
  if not difference <= _CHECK_TOLERANCE:
    raise errors.TflicError(f"the converted synthesis differs from TensorFlow's by "
                            f"{difference:.3g} (tolerance {_CHECK_TOLERANCE:.3g})")


def _sha256(path):
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def manifest(restored, synthesis, builtins, files):
  """The manifest.json contents: the model's identity, sizes and strides, the files with
  their SHA-256, and the synthesis' signature and tensors.

  files: role -> path of the files written.
  """
  cfg = restored.config.model
  return {
      "format_version": bitstream.VERSION,
      "tflic_version": tflic.__version__,
      "fingerprint": bytes(restored.fingerprint).hex(),
      "context_mode": cfg.context_mode,
      "latent_channels": cfg.latent_channels,
      "hyper_channels": cfg.hyper_channels,
      "num_groups": cfg.num_groups,
      "latent_stride": model_lib.LATENT_STRIDE,
      "hyper_stride": model_lib.HYPER_STRIDE,
      "latent_scale": integer_model.ONE,
      "config": json.loads(restored.config.to_json()),
      "files": {role: {"name": os.path.basename(path), "sha256": _sha256(path),
                       "bytes": os.path.getsize(path)} for role, path in files.items()},
      "synthesis": {
          "signature": lite.SIGNATURE,
          "inputs": {key: synthesis.tensors[key] for key in (lite.LATENT, lite.QUALITY)},
          "outputs": {lite.IMAGE: synthesis.tensors[lite.IMAGE]},
          "builtin_ops": builtins,
      },
  }


def export(restored, out, overwrite=False):
  """Writes the LiteRT decoder files of a restored model (`savedmodel.restore_model`) to
  the directory `out`, atomically (temp dir, then rename). Returns the manifest."""
  savedmodel.check_destination(out, overwrite)  # before the slow conversion
  tflite = convert(restored.model)
  builtins = check_builtin_only(tflite)
  with savedmodel.staged_directory(out, overwrite) as staging:
    files = {"synthesis": os.path.join(staging, SYNTHESIS_FILE),
             "entropy_model": os.path.join(staging, ENTROPY_MODEL_FILE)}
    with open(files["synthesis"], "wb") as f:
      f.write(tflite)
    np.savez(files["entropy_model"], **restored.arrays)
    synthesis = lite.Synthesis(files["synthesis"])
    _check_against_tensorflow(synthesis, restored.model)
    contents = manifest(restored, synthesis, builtins, files)
    with open(os.path.join(staging, MANIFEST_FILE), "w", encoding="utf-8") as f:
      json.dump(contents, f, indent=2)
      f.write("\n")
  return contents


def main(argv):
  model_path, _ = common_flags.export_model_and_out(argv)
  savedmodel.check_destination(_OUT.value, _OVERWRITE.value)  # before the slow restore
  start = time.time()
  contents = export(savedmodel.restore_model(model_path), _OUT.value, _OVERWRITE.value)
  size = contents["files"]["synthesis"]["bytes"]
  print(f"exported {model_path} (fingerprint {contents['fingerprint']}) to "
        f"{os.path.abspath(_OUT.value)}: {SYNTHESIS_FILE} {size} bytes, "
        f"{len(contents['synthesis']['builtin_ops'])} builtin op types, "
        f"{time.time() - start:.1f} s")


if __name__ == "__main__":
  app.run(cli.guarded(main, "export.tflite"))
