r"""Exports a model's decoder halves for LiteRT: the synthesis and the integer entropy model.

  python -m export.tflite --model=tflic/bundled/model --out=exported/lite [--overwrite]

`--model` is an exported SavedModel or a training directory (default: the bundled model).
The output directory holds:
  analysis.tflite            g_a and h_a as a LiteRT model with dynamic shapes, builtin
                             ops only: signature "analyze", inputs "image" (float32
                             [1, H, W, 3], pixels / 255, H and W multiples of 16; the
                             caller pads by edge replication) and "quality" (float32 []),
                             outputs "latent" (float32 [1, H/16, W/16, M], the gained y
                             the codec quantizes) and "hyper_latent" (z = h_a(y), float32
                             [1, ceil(H/64), ceil(W/64), C]).
  synthesis.tflite           g_s as a LiteRT model with dynamic shapes, builtin ops only:
                             signature "synthesize", inputs "latent" (float32
                             [1, h, w, M], the integer latent / 1024; any h, w >= 1) and
                             "quality" (float32 []), output "image" (float32
                             [1, 16h, 16w, 3], what `TflicModel.synthesize` returns: the
                             caller crops it and rounds clip(255 x, 0, 255)). The log-gain
                             interpolation runs inside.
  integer_entropy_model.npz  the integer entropy model and coding tables
                             (`tflic.codec.deterministic.reference` reads it).
  manifest.json              what a decoder needs to check and wire them (`manifest`).
`tflic.lite.synthesis` runs both without TensorFlow; `tflic compress` and `tflic
decompress` use the export of the bundled model in tflic/bundled/lite.

The networks convert from the model's own layers (tflic/model/layers/ use only ops LiteRT has
as builtins); the export checks that the converted graphs hold builtin ops only and
compute what TensorFlow does, to float noise.
"""

import hashlib
import json
import os
import tempfile
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.python import schema_util
from tensorflow.lite.python.convert_phase import ConverterError

import tflic
from tflic import cli
from tflic.codec import bitstream
from tflic.codec.deterministic import entropy_model as integer_model
from tflic.codec.deterministic import reference
from tflic import common_flags
from tflic.deploy import savedmodel
from tflic import errors
from tflic.lite import synthesis as lite
from tflic.model import tflic_model as model_lib

_OUT = common_flags.OUT
_OVERWRITE = common_flags.OVERWRITE
_ANALYSIS = flags.DEFINE_bool(
    "analysis", True, "Also export the encoder's networks (analysis.tflite), for `tflic "
    "compress` without TensorFlow; --noanalysis writes a decoder's files only.")
_LINK_ENTROPY_MODEL = flags.DEFINE_bool(
    "link_entropy_model", False, "Name the SavedModel's own assets/integer_entropy_model.npz "
    "in the manifest (by a path relative to --out) instead of writing a copy: for an export "
    "that ships beside its SavedModel, as tflic/bundled/lite beside tflic/bundled/model.")
common_flags.declare_key_flags(__name__, "model", "out", "overwrite")

SYNTHESIS_FILE = "synthesis.tflite"
ANALYSIS_FILE = "analysis.tflite"
FILES = {"synthesis": SYNTHESIS_FILE, "analysis": ANALYSIS_FILE}
ENTROPY_MODEL_FILE = reference.FILENAME
MANIFEST_FILE = "manifest.json"
# The export checks the converted model against TensorFlow on a latent that pads and
# shifts windows at every stage; a quarter of a uint8 level is far above float noise
# (1e-6 on the bundled model) and far below any conversion bug.
_CHECK_LATENT_SIZE = (3, 5)
_CHECK_TOLERANCE = 0.25 / 255
# The same for the analysis, in latent units (quantization steps): a hundredth of a step.
_CHECK_LATENT_TOLERANCE = 0.01
_BUILTIN_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items()
                  if not name.startswith("_")}


def synthesize(model, latent, quality):
  """What the codec's decoder computes from a latent: `model.synthesize` at the gains of
  `quality`."""
  return model.synthesize(latent, model.log_gain(quality))


def analyze(model, image, quality):
  """What the codec's encoder computes from a padded image (`tflic.codec.tf_codec.analyse` and
  `CodecModule._entropy_encode`): the gained latent y and z = h_a(y)."""
  y = model.analysis(image) * tf.exp(model.log_gain(quality))
  return y, model.hyper_latent(y)


class _NetworkModule(tf.Module):
  """One network with a named signature, to be saved and converted."""

  def __init__(self, model, signature, spec, run, variables):
    super().__init__(name=f"tflic_{signature}")
    # Kept out of the object graph: Keras would trace its training call into the
    # SavedModel. The variables the network reads are tracked directly.
    self.__dict__["model"] = model
    self.model_variables = list(variables)
    self.signature = signature
    self.run = tf.function(run, input_signature=spec)


def _synthesis_module(model):
  # The specs' names are the signature's input keys.
  spec = [tf.TensorSpec([1, None, None, model.config.latent_channels], tf.float32,
                        name=lite.LATENT),
          tf.TensorSpec([], tf.float32, name=lite.QUALITY)]
  return _NetworkModule(
      model, lite.SIGNATURE, spec,
      lambda latent, quality: {lite.IMAGE: synthesize(model, latent, quality)},
      list(model.synthesis.variables) + [model.log_gains])


def _analysis_module(model):
  spec = [tf.TensorSpec([1, None, None, 3], tf.float32, name=lite.IMAGE),
          tf.TensorSpec([], tf.float32, name=lite.QUALITY)]

  def run(image, quality):
    y, z = analyze(model, image, quality)
    return {lite.LATENT: y, lite.HYPER_LATENT: z}
  return _NetworkModule(model, lite.ANALYSIS_SIGNATURE, spec, run,
                        list(model.analysis.variables) + list(model.hyper_analysis.variables) +
                        [model.log_gains])


NETWORKS = {"synthesis": _synthesis_module, "analysis": _analysis_module}


def convert(model, network="synthesis"):
  """One network of a TflicModel ("synthesis" or "analysis", see the module docstring)
  as LiteRT flatbuffer bytes (builtin ops only).

  Converted from a temporary SavedModel rather than from the concrete function: the graph
  is the same, and the flatbuffer then carries the named signature `tflic.lite` reads.
  """
  module = NETWORKS[network](model)
  with tempfile.TemporaryDirectory(prefix=f"tflic-{network}-") as staging:
    tf.saved_model.save(module, staging, signatures={
        module.signature: module.run.get_concrete_function()})
    converter = tf.lite.TFLiteConverter.from_saved_model(staging,
                                                         signature_keys=[module.signature])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
      return converter.convert()
    except ConverterError as e:
      # The converter's message is a page of MLIR locations; its summary lines say which
      # ops are missing.
      lines = [l.strip() for l in str(e).splitlines()]
      summary = [l for l in lines if l.startswith(("TF Select ops:", "Custom ops:"))]
      raise errors.TflicError(f"LiteRT conversion of the {network} failed: " + (
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


def check_builtin_only(tflite, network="synthesis"):
  """The builtin op names of a LiteRT flatbuffer; TflicError if it has any other op."""
  builtins, custom = operators(tflite)
  if custom:
    raise errors.TflicError(f"the converted {network} needs non-builtin ops "
                            f"({', '.join(custom)}), which plain LiteRT cannot run")
  return builtins


def _check_against_tensorflow(networks, model):
  """TflicError unless LiteRT's networks match TensorFlow's on a test input."""
  rng = np.random.default_rng(0)
  latent = rng.normal(0.0, 2.0, (1, *_CHECK_LATENT_SIZE, model.config.latent_channels))
  latent = latent.astype(np.float32)
  expected = synthesize(model, tf.constant(latent), 0.5).numpy()
  differences = {"synthesis": (float(np.max(np.abs(networks["synthesis"](latent, 0.5) -
                                                   expected))), _CHECK_TOLERANCE)}
  if "analysis" in networks:
    image = np.clip(expected[..., :3], 0.0, 1.0).astype(np.float32)  # an image-like input
    y, z = analyze(model, tf.constant(image), 0.5)
    lite_y, lite_z = networks["analysis"](image, 0.5)
    differences["analysis"] = (max(float(np.max(np.abs(lite_y - y.numpy()))),
                                   float(np.max(np.abs(lite_z - z.numpy())))),
                               _CHECK_LATENT_TOLERANCE)
  for network, (difference, tolerance) in differences.items():
    if not difference <= tolerance:
      raise errors.TflicError(f"the converted {network} differs from TensorFlow's by "
                              f"{difference:.3g} (tolerance {tolerance:.3g})")


def _sha256(path):
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def manifest(restored, networks, builtins, files, names=None):
  """The manifest.json contents: the model's identity, sizes and strides, the files with
  their SHA-256, and each network's signature, tensors and ops.

  networks: name -> the loaded `tflic.lite.synthesis` network; builtins: name -> its
  builtin op names; files: role -> path of the files written; names: role -> the name
  the manifest gives a file outside the export (relative to it).
  """
  cfg = restored.config.model
  contents = {
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
      "files": {role: {"name": (names or {}).get(role, os.path.basename(path)),
                       "sha256": _sha256(path), "bytes": os.path.getsize(path)}
                for role, path in files.items()},
  }
  for name, network in networks.items():
    contents[name] = {"signature": network.signature,
                      "inputs": {key: network.tensors[key] for key in network.INPUTS},
                      "outputs": {key: network.tensors[key] for key in network.OUTPUTS},
                      "builtin_ops": builtins[name]}
  return contents


def export(restored, out, overwrite=False, analysis=True, entropy_model=None):
  """Writes the LiteRT files of a restored model (`savedmodel.restore_model`) to the
  directory `out`, atomically (temp dir, then rename). Returns the manifest.

  analysis: also the encoder's networks (analysis.tflite); without, a decoder's files.
  entropy_model: the path of an existing integer_entropy_model.npz holding
  `restored.arrays` (the SavedModel's own asset) for the manifest to name, by a path
  relative to `out`, instead of a copy in `out`."""
  savedmodel.check_destination(out, overwrite)  # before the slow conversion
  names = ["synthesis"] + (["analysis"] if analysis else [])
  flatbuffers = {name: convert(restored.model, name) for name in names}
  builtins = {name: check_builtin_only(flatbuffers[name], name) for name in names}
  with savedmodel.staged_directory(out, overwrite) as staging:
    files = {name: os.path.join(staging, FILES[name]) for name in names}
    for name in names:
      with open(files[name], "wb") as f:
        f.write(flatbuffers[name])
    outside = {}
    if entropy_model is None:
      files["entropy_model"] = os.path.join(staging, ENTROPY_MODEL_FILE)
      np.savez(files["entropy_model"], **restored.arrays)
    else:  # `out` replaces `staging`, a directory beside it: the same relative path
      files["entropy_model"] = os.path.abspath(entropy_model)
      outside["entropy_model"] = os.path.relpath(files["entropy_model"], staging)
    networks = {name: lite.NETWORKS[name](files[name]) for name in names}
    _check_against_tensorflow(networks, restored.model)
    contents = manifest(restored, networks, builtins, files, outside)
    with open(os.path.join(staging, MANIFEST_FILE), "w", encoding="utf-8") as f:
      json.dump(contents, f, indent=2)
      f.write("\n")
  return contents


def main(argv):
  model_path, _ = common_flags.export_model_and_out(argv)
  savedmodel.check_destination(_OUT.value, _OVERWRITE.value)  # before the slow restore
  start = time.time()
  entropy_model = None
  if _LINK_ENTROPY_MODEL.value:
    entropy_model = os.path.join(model_path, bitstream.MODEL_ASSET)
    if not os.path.isfile(entropy_model):
      raise errors.TflicError(f"--link_entropy_model needs a SavedModel export as --model; "
                              f"{model_path} has no {bitstream.MODEL_ASSET}")
  contents = export(savedmodel.restore_model(model_path), _OUT.value, _OVERWRITE.value,
                    analysis=_ANALYSIS.value, entropy_model=entropy_model)
  sizes = ", ".join(f"{contents['files'][name]['name']} {contents['files'][name]['bytes']} "
                    f"bytes ({len(contents[name]['builtin_ops'])} builtin op types)"
                    for name in FILES if name in contents)
  print(f"exported {model_path} (fingerprint {contents['fingerprint']}) to "
        f"{os.path.abspath(_OUT.value)}: {sizes}, {time.time() - start:.1f} s")


if __name__ == "__main__":
  app.run(cli.guarded(main, "export.tflite"))
