"""SavedModel export of the codec (library; the script is tflic/export.py).

The SavedModel has the signatures `compress(image: uint8[H, W, 3], quality: float32[]) ->
{"bitstream": string[]}`, `compress_refined(image, quality, refine_steps: int32[])` (the
same, with encoder-side latent refinement) and `decompress(bitstream: string[]) ->
{"image": uint8[H, W, 3]}`, and the tf.functions `compress`, `compress_refined`,
`decompress` and `decode_latent` as attributes, and `assets/integer_entropy_model.npz`,
the integer entropy model and coding tables for decoders without TensorFlow
(`tflic.deterministic.reference`). It loads in
any process that has run `import tensorflow_compression` (which registers the range coder
ops); no tflic code is needed.
"""

import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from tflic import codec
from tflic import errors
from tflic.deterministic import reference


def serving_signatures(module):
  """Signatures with named outputs, for TF Serving and `loaded.signatures[...]`."""
  @tf.function(input_signature=module.compress.input_signature)
  def compress(image, quality):
    return {"bitstream": module.compress(image, quality)}

  @tf.function(input_signature=module.compress_refined.input_signature)
  def compress_refined(image, quality, refine_steps):
    return {"bitstream": module.compress_refined(image, quality, refine_steps)}

  @tf.function(input_signature=module.decompress.input_signature)
  def decompress(bitstream):
    return {"image": module.decompress(bitstream)}

  return {"compress": compress.get_concrete_function(),
          "compress_refined": compress_refined.get_concrete_function(),
          "decompress": decompress.get_concrete_function()}


def export(module, out, overwrite=False):
  """Writes a CodecModule as a SavedModel at `out`, atomically (temp dir, then rename)."""
  out = os.path.abspath(out)
  if os.path.exists(out) and not overwrite:
    raise errors.TflicError(f"{out} exists; pass --overwrite to replace it")
  parent = os.path.dirname(out)
  if not os.path.isdir(parent):
    raise errors.TflicError(f"output directory {parent} does not exist")
  staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
  try:
    tf.saved_model.save(module, staging, signatures=serving_signatures(module))
    # The TF-free half of the entropy model (tflic.deterministic.reference).
    os.makedirs(os.path.join(staging, "assets"), exist_ok=True)
    np.savez(os.path.join(staging, "assets", reference.FILENAME), **module.reference_arrays())
    if os.path.exists(out):
      shutil.rmtree(out)
    os.replace(staging, out)
  finally:
    if os.path.exists(staging):
      shutil.rmtree(staging)
  return out


def export_checkpoint(workdir, out, overwrite=False):
  """Restores the latest checkpoint of a training directory and exports it."""
  module, step = codec.module_from_workdir(workdir)
  return export(module, out, overwrite=overwrite), step
