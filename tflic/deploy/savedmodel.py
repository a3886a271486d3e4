"""SavedModel export of the codec (library; the script is tflic/export.py).

The SavedModel has the signatures `compress(image: uint8[H, W, 3], quality: float32[]) ->
{"bitstream": string[]}`, `compress_refined(image, quality, refine_steps: int32[])` (the
same, with encoder-side latent refinement) and `decompress(bitstream: string[]) ->
{"image": uint8[H, W, 3]}`, and the tf.functions `compress`, `compress_refined`,
`decompress` and `decode_latent` as attributes (with `analyse_tile`, `compress_latent`
and `synthesize_tile`, the halves `tflic.codec.Codec` codes large images with, in
tiles, and `hyper_analysis`, with which it codes their latents in the C core's Python
binding, reporting progress), and `assets/integer_entropy_model.npz`,
the integer entropy model and coding tables for decoders without TensorFlow
(`tflic.codec.deterministic.reference`). Its graph range-codes with tflic's ops
(`tflic.codec.rangecoder.tf_ops`, built by `pip install -e .` into `tflic/codec/rangecoder/_tf_ops.so`),
so it loads in any process that has run `tf.load_op_library` on that file (or imported
`tflic.codec.rangecoder.tf_ops`, which does so); neither tflic's Python code nor
tensorflow-compression is needed.
"""

import collections
import contextlib
import json
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from tflic.codec.deterministic import quantize
from tflic.codec.deterministic import reference
from tflic.codec.deterministic import tables as tables_lib
from tflic.codec.rangecoder import tf_ops  # pylint: disable=unused-import  (registers its ops)
from tflic.codec import tf_codec
from tflic import config as config_lib
from tflic import errors
from tflic.model import checkpoint


def serving_signatures(module):
  """Signatures with named outputs, for TF Serving and `loaded.signatures[...]`.

  tf.functions, not concrete functions: `tf.saved_model.save` traces them and the
  module's functions in its own context, so that each graph is saved once (traced
  before, in another context, the module's graphs were saved twice: twice the size and
  the time to load)."""
  @tf.function(input_signature=module.compress.input_signature)
  def serve_compress(image, quality):
    return {"bitstream": module.compress(image, quality)}

  @tf.function(input_signature=module.compress_refined.input_signature)
  def serve_compress_refined(image, quality, refine_steps):
    return {"bitstream": module.compress_refined(image, quality, refine_steps)}

  @tf.function(input_signature=module.decompress.input_signature)
  def serve_decompress(bitstream):
    return {"image": module.decompress(bitstream)}

  return {"compress": serve_compress, "compress_refined": serve_compress_refined,
          "decompress": serve_decompress}


def check_destination(out, overwrite=False):
  """The absolute path of an output directory; TflicError if it exists (without
  `overwrite`) or its parent does not."""
  out = os.path.abspath(out)
  if os.path.exists(out) and not overwrite:
    raise errors.TflicError(f"{out} exists; pass --overwrite to replace it")
  parent = os.path.dirname(out)
  if not os.path.isdir(parent):
    raise errors.TflicError(f"output directory {parent} does not exist")
  return out


@contextlib.contextmanager
def staged_directory(out, overwrite=False):
  """Writes a directory atomically: yields a staging directory beside `out`, which
  replaces `out` when the block completes and is removed if it fails."""
  out = check_destination(out, overwrite)
  staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}-", dir=os.path.dirname(out))
  try:
    # mkdtemp's 0700 would hide an export from a server running as another user.
    os.chmod(staging, 0o755)
    yield staging
    if os.path.exists(out):
      shutil.rmtree(out)
    os.replace(staging, out)
  finally:
    if os.path.exists(staging):
      shutil.rmtree(staging)


def export(module, out, overwrite=False):
  """Writes a CodecModule as a SavedModel at `out`, atomically (temp dir, then rename)."""
  with staged_directory(out, overwrite) as staging:
    tf.saved_model.save(module, staging, signatures=serving_signatures(module))
    # The TF-free half of the entropy model (tflic.codec.deterministic.reference).
    os.makedirs(os.path.join(staging, "assets"), exist_ok=True)
    np.savez(os.path.join(staging, "assets", reference.FILENAME), **module.reference_arrays())
  return os.path.abspath(out)


def export_checkpoint(workdir, out, overwrite=False, average=False):
  """Restores the latest checkpoint of a training directory and exports it.

  `workdir` may also be an earlier export: it is rebuilt with the current code (e.g. to
  give an old export the current graph); its weights and tables, and so its files, stay
  the same. Returns (path, step; None for an export). `average` exports the moving
  average of a training directory's weights (`checkpoint.restore_model`)."""
  if tf_codec.is_saved_model(workdir):
    if average:
      raise errors.TflicError(f"{workdir} is an export: it holds one set of weights")
    return export(module_from_export(workdir), out, overwrite=overwrite), None
  module, step = tf_codec.module_from_workdir(workdir, average=average)
  return export(module, out, overwrite=overwrite), step


def module_from_export(path):
  """A CodecModule rebuilt from an export (its weights, stored tables and config);
  TflicError unless it has the export's fingerprint."""
  restored = restore_model(path)
  prefix = "tables/"
  tables = {key[len(prefix):]: value for key, value in restored.arrays.items()
            if key.startswith(prefix)}
  # The libm tables were computed in float64 and fingerprinted so, -0.0 included; the
  # export stores their integer values as int32. This machine's libm recomputes them;
  # they must equal the stored values (and the fingerprint check below must pass).
  computed = quantize.libm_tables(restored.config.model)
  for key in tables_lib.LIBM_KEYS:
    stored = restored.arrays[key]
    tables[key] = computed[key] if np.array_equal(computed[key], stored) else stored
  module = tf_codec.CodecModule(restored.model, restored.config.to_json(),
                             distortion=restored.config.train.distortion, tables=tables)
  if module.fingerprint.numpy() != restored.fingerprint:
    raise errors.TflicError(f"{path} rebuilt with this code has another fingerprint; "
                            "export it from its training directory instead")
  return module


class Restored(collections.namedtuple("Restored", "config model arrays fingerprint")):
  """A model rebuilt from an export or a training directory (`restore_model`)."""


def restore_model(path):
  """The Keras model and coding data of an export or a training directory.

  For exporters that rebuild parts of the model (export/). Returns `Restored`: the
  config (`tflic.config.Config`), the TflicModel with the trained weights, the integer
  entropy model and coding tables as numpy arrays (the contents of
  `assets/integer_entropy_model.npz`, what decoders code with) and the 8-byte weights
  fingerprint files carry.
  """
  if not os.path.isdir(path):
    raise errors.TflicError(f"model not found: {path}")
  if not tf_codec.is_saved_model(path):
    module, _ = tf_codec.module_from_workdir(path)
    cfg = checkpoint.load_config(path)
    return Restored(cfg, module.model, module.reference_arrays(), module.fingerprint.numpy())
  # Exports range-code with tflic's ops (tf_ops, imported above). Those written before,
  # with tensorflow-compression's range coder ops, load too (e.g. to be re-exported with
  # this version's graph: `export_checkpoint`): importing it registers its ops (tflic.model.tflic_model
  # imports it anyway, for its entropy models).
  import tensorflow_compression  # pylint: disable=g-import-not-at-top,unused-import
  try:
    loaded = tf.saved_model.load(path)
  except (OSError, ValueError, tf.errors.OpError) as e:
    raise errors.TflicError(f"cannot load SavedModel {path}: {tf_codec._first_line(e)}") from None  # pylint: disable=protected-access
  assets = os.path.join(path, "assets", reference.FILENAME)
  if not hasattr(loaded, "model_variables") or not os.path.isfile(assets):
    raise errors.TflicError(f"{path} is not a tflic export of format version 2")
  cfg = config_lib.from_dict(json.loads(loaded.config_json.numpy().decode()))
  model = checkpoint.build_model(cfg)
  if [v.shape for v in model.variables] != [v.shape for v in loaded.model_variables]:
    raise errors.TflicError(f"the weights in {path} do not fit its config")
  for variable, value in zip(model.variables, loaded.model_variables):
    variable.assign(value)
  with np.load(assets) as data:
    arrays = {key: data[key] for key in data.files}
  return Restored(cfg, model, arrays, loaded.fingerprint.numpy())
