"""The integer entropy model and coding loop in C (entropy_core.c), from Python.

`model_blob(arrays)` turns the arrays of an `integer_entropy_model.npz` (as exported
today, `tflic.codec.deterministic.reference.export_arrays`) into the flat model blob the C core
reads: "TFEC", version, payload length, CRC-32 (zlib's) of the payload, then little-endian
int64 values in a fixed order (scalars; arrays as ndim, dims, values). `Core` decodes
and encodes a file's streams with it: the same integers and bytes as the numpy
reference (`tflic.codec.deterministic`), much faster; a `progress(done, total)` callable
hears how many of the latent's chunks are coded. Imports no TensorFlow.
"""

import struct
import zlib

import numpy as np

from tflic.codec import bitstream
from tflic.codec.rangecoder import _core

CoreError = _core.CoreError
MAGIC = b"TFEC"
VERSION = 1
# Progress calls per image by default: enough for a smooth bar, few enough that the
# calls (each takes the GIL back) cost nothing measurable.
PROGRESS_CALLS = 200


class _Writer:
  """Collects the payload's int64 values in order."""

  def __init__(self):
    self.parts = []

  def scalar(self, value):
    if float(value) != int(value):
      raise ValueError(f"entropy model scalar {value} is not an integer")
    self.parts.append(np.array([int(value)], "<i8"))

  def array(self, values):
    values = np.asarray(values)
    as_float = values.astype(np.float64)
    if values.dtype.kind == "f" and not np.array_equal(as_float, np.round(as_float)):
      raise ValueError("entropy model array holds non-integers")
    self.parts.append(np.array([values.ndim] + list(values.shape), "<i8"))
    self.parts.append(np.ascontiguousarray(as_float.astype("<i8")).ravel())

  def shifts(self, unscale):
    """Column scales 2^-s stored as s."""
    unscale = np.asarray(unscale, np.float64)
    mantissa, exponent = np.frexp(unscale)
    if not np.all(mantissa == 0.5):
      raise ValueError("entropy model column scale is not a power of two")
    self.array(1 - exponent)

  def dense(self, p):
    self.scalar(int("b" in p))
    self.array(p["w"])
    if "b" in p:
      self.array(p["b"])
    self.shifts(p["unscale"])

  def norm(self, p):
    self.scalar(p["shift"])
    self.scalar(p["eps"])
    self.array(p["gamma"])
    self.array(p["beta"])

  def mlp(self, p):
    self.dense(p["fc1"])
    self.dense(p["fc2"])

  def payload(self):
    return b"".join(part.tobytes() for part in self.parts)


def model_blob(arrays):
  """The C core's model blob of an `integer_entropy_model.npz`'s arrays (a dict)."""
  from tflic.codec.deterministic import entropy_model  # pylint: disable=g-import-not-at-top
  flat = {k: (np.asarray(v).item() if np.asarray(v).ndim == 0 else np.asarray(v))
          for k, v in arrays.items()}
  tree = entropy_model.unflatten({k: v for k, v in flat.items()
                                  if not k.startswith(("tables/", "config/"))})
  out = _Writer()
  mode = str(flat["config/mode"])
  for key in ("config/window", "config/num_groups"):
    out.scalar(flat[key])
  out.scalar(bitstream.MODE_FLAGS[mode])
  out.scalar(flat["config/latent_channels"])
  out.scalar(flat["config/hyper_channels"])
  hyper = tree["hyper_synthesis"]
  out.scalar(int("layers" in hyper))
  if "layers" in hyper:
    out.scalar(len(hyper["layers"]))
    for layer in hyper["layers"]:
      out.scalar(layer["stride"])
      out.scalar(layer["relu"])
      out.array(layer["w"])
      out.array(layer["b"])
      out.shifts(layer["unscale"])
  else:
    out.dense(hyper["resample0"]["expansion"])
    out.scalar(len(hyper.get("blocks", [])))
    for block in hyper.get("blocks", []):
      out.scalar(block["window"])
      out.scalar(block["shift"])
      out.scalar(block["attn"]["heads"])
      out.norm(block["norm1"])
      out.dense(block["attn"]["qkv"])
      out.dense(block["attn"]["proj"])
      out.array(block["attn"]["bias"])
      out.norm(block["norm2"])
      out.mlp(block["mlp"])
    out.dense(hyper["resample1"]["expansion"])
  context = tree["context"]
  out.dense(context["chunk_embed"])
  out.dense(context["hyper_embed"])
  for key in ("group_embedding", "slot_embedding", "query_embedding"):
    out.array(context[key])
  out.scalar(len(context["blocks"]))
  for block in context["blocks"]:
    out.scalar(block["heads"])
    out.norm(block["norm_query"])
    out.dense(block["query"])
    out.dense(block["key_value"])
    out.dense(block["proj"])
    out.norm(block["norm_mlp"])
    out.mlp(block["mlp"])
  out.scalar(context["context_eps"])
  out.norm(context["head_norm"])
  out.array(context["head"]["w"])
  out.array(context["head"]["b"])
  out.shifts(context["head"]["unscale"])
  for key in ("gelu", "exp", "thresholds"):
    out.array(tree[key])
  for key in ("y_cdf", "y_cdf_offset", "z_cdf", "z_cdf_offset", "z_offset"):
    out.array(np.ravel(flat[f"tables/{key}"]))
  for key in ("y_cdf", "z_cdf"):
    for value in bitstream.symbol_cost(flat[f"tables/{key}"]):
      out.scalar(value)
  payload = out.payload()
  return (MAGIC + struct.pack("<IQQ", VERSION, len(payload), zlib.crc32(payload)) +
          payload)


class Core:
  """The C entropy model of one exported model.

  Args:
    arrays: the arrays of its `integer_entropy_model.npz`, or a model blob (bytes).
  """

  def __init__(self, arrays):
    blob = arrays if isinstance(arrays, (bytes, bytearray)) else model_blob(arrays)
    self._model = _core.Model(bytes(blob))
    info = self._model.info()
    self.latent_channels = info["latent_channels"]
    self.hyper_channels = info["hyper_channels"]
    self.num_groups = info["num_groups"]
    self.window = info["window"]
    self.mode = info["mode"]
    self.hyper_features_channels = info["hyper_features"]
    self.y_cost, self.z_cost = info["y_cost"], info["z_cost"]

  def chunks(self, h, w):
    """How many chunks (positions x groups) the coding loop codes on an h x w latent:
    the `total` a progress callable hears."""
    return h * w * self.num_groups

  def coding_progress(self, progress, h, w):
    """For a reporter of stages, `progress(stage, done, total)` (tflic.codec.progress):
    reports ("coding", 0, chunks) and returns the (done, total) callable that `encode` and
    `decode` report the rest of the coding to; None without a reporter."""
    if not progress:
      return None
    progress("coding", 0, self.chunks(h, w))
    return lambda done, total: progress("coding", done, total)

  def _interval(self, h, w, interval):
    return interval or max(1, self.chunks(h, w) // PROGRESS_CALLS)

  def decode(self, height, width, z_stream, y_stream, check, max_pixels=0, progress=None,
             interval=None):
    """(z_symbols int32 [1, hz, wz, C], y_hat float64 [1, h, w, M]) of a file's streams.

    progress: None or a callable (done, total) that the coding loop calls with the chunks
    coded so far, after a coding step once `interval` more are done (default: about
    PROGRESS_CALLS calls per image), and at the end with done == total. An exception it
    raises (or a pending signal's, e.g. KeyboardInterrupt) stops the decoding and
    propagates; the calls change nothing that is decoded.

    Raises CoreError with a one-line message for a corrupt file or a desync.
    """
    h, w = bitstream.latent_grid(height, width)
    z_symbols, y_hat = self._model.decode(int(height), int(width), bytes(z_stream),
                                          bytes(y_stream), int(check), int(max_pixels),
                                          progress, self._interval(h, w, interval))
    hz, wz = bitstream.hyper_grid(height, width)
    return (np.frombuffer(z_symbols, np.int32).reshape(1, hz, wz, self.hyper_channels),
            np.frombuffer(y_hat, np.float64).reshape(1, h, w, self.latent_channels))

  def encode(self, y, z, progress=None, interval=None):
    """(z_stream, y_stream, latent_check, y_hat [1, h, w, M]) of an encoder's latents:
    y float32 [1, h, w, M] (gained), z float32 [1, hz, wz, C]. progress, interval: as in
    `decode` (the same bytes with or without)."""
    y = np.ascontiguousarray(y, np.float32)
    z = np.ascontiguousarray(z, np.float32)
    _, h, w, _ = y.shape
    z_stream, y_stream, check, y_hat = self._model.encode(
        h, w, y, z, progress, self._interval(h, w, interval))
    return z_stream, y_stream, check, np.frombuffer(y_hat, np.float64).reshape(y.shape)

  def hyper_features(self, z_symbols, height, width):
    """h_s of z's symbols [1, hz, wz, C] on the latent grid (height, width): float64
    [1, h, w, D] integers."""
    z_symbols = np.ascontiguousarray(z_symbols, np.int32)
    out = self._model.hyper_features(z_symbols, int(height), int(width))
    return np.frombuffer(out, np.float64).reshape(1, height, width,
                                                  self.hyper_features_channels)
