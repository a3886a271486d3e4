"""Coding tables of a model, computed once and stored: never recomputed by a decoder.

The range coder's CDF tables (y's 64 discretized Gaussians, z's factorized prior), z's
dequantization offsets and the libm tables of the integer networks are float
computations whose last bits can differ between machines, runtimes and library versions.
They are computed here, once per checkpoint, and stored beside it
(`<checkpoint>.tables.npz`) and in every export, so that a training directory and its
exports code byte-identical files.
"""

import io
import sys

import numpy as np
import tensorflow as tf

from tflic.codec.deterministic import layers
from tflic.codec.deterministic import quantize

SUFFIX = ".tables.npz"
LIBM_KEYS = ("gelu", "exp", "thresholds")  # the integer networks' tables
KEYS = ("y_cdf", "y_cdf_offset", "z_cdf", "z_cdf_offset", "z_offset") + LIBM_KEYS


def compute(model):
  """The tables of a TflicModel, as numpy arrays (see KEYS)."""
  latent = model.latent_entropy_model(compression=True)
  hyper = model.hyper_entropy_model(compression=True)
  offset = hyper.quantization_offset
  offset = np.zeros(model.config.hyper_channels) if offset is None else offset.numpy()
  tables = {
      "y_cdf": latent.cdf.numpy(), "y_cdf_offset": latent.cdf_offset.numpy(),
      "z_cdf": hyper.cdf.numpy(), "z_cdf_offset": hyper.cdf_offset.numpy(),
      # z_hat = symbol + offset, with the offset on the activations' fixed-point grid.
      "z_offset": np.round(offset.astype(np.float64) * 2.0**layers.ACT_BITS),
  }
  tables.update(quantize.libm_tables(model.config))
  return tables


def path_for(checkpoint_prefix):
  return checkpoint_prefix + SUFFIX


def save(path, tables):
  """Writes tables atomically (local paths and gs:// alike)."""
  buffer = io.BytesIO()
  np.savez(buffer, **tables)
  with tf.io.gfile.GFile(path + ".tmp", "wb") as f:
    f.write(buffer.getvalue())
  tf.io.gfile.rename(path + ".tmp", path, overwrite=True)


def load(path):
  """Tables saved by `save`, or None if there is no such file."""
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path, "rb") as f:
    with np.load(io.BytesIO(f.read())) as data:
      return {k: data[k] for k in KEYS}


def load_or_create(checkpoint_prefix, model):
  """The stored tables of a checkpoint; made and stored on first use.

  A training directory that cannot be written to (read-only copy) gets the tables made
  here, with a warning: files coded with them decode only where the same tables are made.
  """
  path = path_for(checkpoint_prefix)
  tables = load(path)
  if tables is None:
    tables = compute(model)
    try:
      save(path, tables)
    except (OSError, tf.errors.OpError) as e:
      print(f"warning: cannot store the coding tables beside {checkpoint_prefix} "
            f"({type(e).__name__}); files coded now decode only with tables computed on "
            "this machine", file=sys.stderr)
  return tables
